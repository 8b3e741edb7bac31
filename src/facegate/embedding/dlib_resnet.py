"""dlib's face-recognition ResNet behind `Embedder`, on dlib's own runtime or on ONNX Runtime.

Both classes align with `alignment.face_chips` and average each chip with its mirror image
(`base.MirroredEmbedder`), so they produce the same vectors (cosine ≥ 0.9999) and share a `name`:
a gallery stays valid when switching between them.
"""

from __future__ import annotations

import threading
from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from facegate.batching import ModelRunner
from facegate.embedding.alignment import face_chips
from facegate.embedding.base import MIRROR_SUFFIX, MirroredEmbedder, unit_descriptors
from facegate.embedding.dlib_onnx import INPUT_NAME, converted_model
from facegate.embedding.models import RESNET_PATH, dlib_resnet
from facegate.faces import Face
from facegate.runtime import DEFAULT_RUNTIME, RuntimeOptions, create_session

MODEL_NAME = "dlib_resnet_v1"
# dlib's network object keeps its activations in itself, and every DlibEmbedder shares the one
# loaded network: one forward pass at a time per process.
_DLIB_NET_LOCK = threading.Lock()


class DlibResNetEmbedder(MirroredEmbedder):
    """The shared part of both runtimes: dlib's alignment."""

    dim = 128

    def __init__(self, mirror: bool) -> None:
        super().__init__(MODEL_NAME, mirror)

    def crops(self, image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        return face_chips(image, faces)

    @abstractmethod
    def descriptors(self, crops: np.ndarray) -> np.ndarray:
        """Raw (n, 128) dlib descriptors of (n, 150, 150, 3) uint8 chips, in one batch."""


class DlibEmbedder(DlibResNetEmbedder):
    """dlib's own runtime (`FACE_EMBEDDER=dlib`): the reference, about 95 ms per chip on CPU."""

    def __init__(self, mirror: bool = True) -> None:
        super().__init__(mirror)
        self._model = dlib_resnet()

    @property
    def providers(self) -> tuple[str, ...]:
        return ("dlib",)

    def descriptors(self, chips: np.ndarray) -> np.ndarray:
        batch = [np.ascontiguousarray(chip) for chip in chips]
        with _DLIB_NET_LOCK:
            return np.array(self._model.compute_face_descriptor(batch), dtype=np.float32)


class DlibOnnxEmbedder(DlibResNetEmbedder):
    """The same network converted to ONNX (`FACE_EMBEDDER=onnx`, the default)."""

    def __init__(
        self,
        cache_dir: Path,
        mirror: bool = True,
        runtime: RuntimeOptions = DEFAULT_RUNTIME,
        source: Path = RESNET_PATH,
    ) -> None:
        super().__init__(mirror)
        session = create_session(converted_model(source, cache_dir), runtime)
        # InferenceSession.run is thread-safe; no lock needed.
        self._model = ModelRunner(session, INPUT_NAME, runtime.batch_wait, MODEL_NAME)

    @property
    def providers(self) -> tuple[str, ...]:
        return self._model.providers

    def descriptors(self, chips: np.ndarray) -> np.ndarray:
        return self._model(chips)


__all__ = [
    "MIRROR_SUFFIX",
    "MODEL_NAME",
    "DlibEmbedder",
    "DlibOnnxEmbedder",
    "DlibResNetEmbedder",
    "unit_descriptors",
]
