"""The interface every face-embedding model implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from facegate.faces import Face


class Embedder(ABC):
    """Turns the faces found in one image into L2-normalised vectors.

    `name` is recorded with every stored vector: two embedders that produce the same vectors
    (e.g. dlib on its own runtime and on ONNX Runtime) share a name; different models never do.
    """

    name: str
    dim: int

    @abstractmethod
    def embed(self, image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        """Return a (len(faces), dim) float32 array of unit vectors for `faces` of the RGB uint8 `image`."""
