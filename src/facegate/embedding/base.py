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

    @property
    def providers(self) -> tuple[str, ...]:
        """The runtimes its model runs on, in order of preference: its ONNX Runtime sessions'
        (`session.get_providers()`), or e.g. ("dlib",) for another runtime; () when it runs none."""
        return ()


MIRROR_SUFFIX = "+mirror"


def _normalised(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def unit_descriptors(raw: np.ndarray, faces: int) -> np.ndarray:
    """Unit vectors from raw descriptors: rows [0, faces) are the crops; any further `faces`
    rows are their mirror images, averaged in after normalisation (each view weighs the same)."""
    views = _normalised(raw.astype(np.float64)).reshape(-1, faces, raw.shape[1])
    return _normalised(views.mean(axis=0)).astype(np.float32)


class MirroredEmbedder(Embedder):
    """A network that embeds fixed-size crops: optionally each crop's mirror image joins the same
    batch and the two unit vectors are averaged (`+mirror` in the name)."""

    def __init__(self, model_name: str, mirror: bool) -> None:
        self.mirror = mirror
        self.name = model_name + (MIRROR_SUFFIX if mirror else "")

    def embed(self, image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        if not faces:
            return np.zeros((0, self.dim), np.float32)
        crops = self.crops(image, faces)
        if self.mirror:
            crops = np.concatenate([crops, crops[:, :, ::-1]])  # one batch: originals then mirrors
        return unit_descriptors(self.descriptors(crops), len(faces))

    @abstractmethod
    def crops(self, image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        """(len(faces), H, W, 3) uint8 RGB network inputs for `faces` of `image`."""

    @abstractmethod
    def descriptors(self, crops: np.ndarray) -> np.ndarray:
        """Raw (n, dim) descriptors of n crops, in one batch."""
