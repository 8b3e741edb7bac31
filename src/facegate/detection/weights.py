"""The published MTCNN weights, read from the `mtcnn` package's files without importing it.

`import mtcnn` pulls in TensorFlow, so the package is only located, never imported.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

import joblib
import numpy as np

NetworkName = Literal["pnet", "rnet", "onet"]


def weights_dir() -> Path:
    """The folder holding `pnet.lz4`, `rnet.lz4` and `onet.lz4` inside the installed `mtcnn` package."""
    spec = importlib.util.find_spec("mtcnn")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the 'mtcnn' package (weights only) is not installed: pip install mtcnn==1.0.0")
    return Path(next(iter(spec.submodule_search_locations))) / "assets" / "weights"


def load_weights(name: NetworkName) -> list[np.ndarray]:
    """The arrays of one network in Keras layout, in the order its layers are built."""
    path = weights_dir() / f"{name}.lz4"
    if not path.is_file():
        raise RuntimeError(f"MTCNN weights not found: {path}")
    arrays = joblib.load(path)
    return [np.asarray(array, dtype=np.float32) for array in arrays]
