"""ArcFace (insightface-format ONNX) behind `Embedder`, aligned from the detector's five keypoints.

The model is user-supplied (`ARCFACE_MODEL_PATH`, e.g. insightface's `w600k_r50.onnx`): input
(N, 3, 112, 112) float RGB scaled to (x − 127.5) / 127.5, output one embedding per face. Faces are
aligned with the similarity transform that best maps the five keypoints onto insightface's
112 × 112 template (least squares, Umeyama 1991), warped with Pillow.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from facegate.batching import ModelRunner
from facegate.chips import TEMPLATE, TEMPLATE_SIZE, similarity_transform, warp_affine
from facegate.embedding.base import Embedder, MirroredEmbedder
from facegate.faces import Face
from facegate.runtime import DEFAULT_RUNTIME, RuntimeOptions, create_session

CHIP_SIZE = TEMPLATE_SIZE


def arcface_chips(image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
    """(len(faces), 112, 112, 3) uint8 RGB crops with the keypoints on the template."""
    picture = Image.fromarray(np.ascontiguousarray(image))
    chips = [
        warp_affine(picture, similarity_transform(face.keypoints, TEMPLATE), CHIP_SIZE) for face in faces
    ]
    return np.stack(chips) if chips else np.zeros((0, CHIP_SIZE, CHIP_SIZE, 3), np.uint8)


class TemplateAlignedEmbedder(MirroredEmbedder):
    """A converted network of ours that embeds uint8 (N, 112, 112, 3) RGB crops aligned on the ArcFace
    template, on ONNX Runtime, with the optional mirror pass: the shipped MobileFaceNets."""

    def __init__(
        self, model: bytes, input_name: str, model_name: str, mirror: bool, runtime: RuntimeOptions
    ) -> None:
        super().__init__(model_name, mirror)
        self._model = ModelRunner(create_session(model, runtime), input_name, runtime.batch_wait, model_name)

    @property
    def providers(self) -> tuple[str, ...]:
        return self._model.providers

    def crops(self, image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        return arcface_chips(image, faces)

    def descriptors(self, crops: np.ndarray) -> np.ndarray:
        """Raw (n, dim) embeddings of n crops, in one batch."""
        return self._model(crops)


def _short_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


class ArcFaceEmbedder(Embedder):
    """`FACE_EMBEDDER=arcface`. The name holds the file's stem and checksum, so a gallery built with
    another ArcFace model is refused rather than compared."""

    def __init__(self, model_path: Path, runtime: RuntimeOptions = DEFAULT_RUNTIME) -> None:
        model_path = Path(model_path)
        if not model_path.is_file():
            raise FileNotFoundError(f"ArcFace model not found: {model_path} (set ARCFACE_MODEL_PATH)")
        session = create_session(model_path, runtime)
        model_input = session.get_inputs()[0]
        if len(model_input.shape) != 4 or list(model_input.shape[1:]) != [3, CHIP_SIZE, CHIP_SIZE]:
            raise ValueError(
                f"{model_path.name}: expected an input of shape (N, 3, {CHIP_SIZE}, {CHIP_SIZE}), "
                f"the model's input {model_input.name!r} has shape {model_input.shape}"
            )
        # Models exported with a fixed batch of 1 are run one face at a time (never batched).
        self._batched = model_input.shape[0] != 1
        wait = runtime.batch_wait if self._batched else 0.0
        self._model = ModelRunner(session, model_input.name, wait, "arcface")
        self.dim = self._output_dim(session.get_outputs()[0].shape)
        self.name = f"arcface:{model_path.stem}:{_short_sha256(model_path)}"

    @property
    def providers(self) -> tuple[str, ...]:
        return self._model.providers

    def _output_dim(self, shape: list[int | str]) -> int:
        if len(shape) == 2 and isinstance(shape[1], int):
            return shape[1]
        # Symbolic output shape: ask the model.
        probe = self._model(np.zeros((1, 3, CHIP_SIZE, CHIP_SIZE), np.float32))
        if probe.ndim != 2:
            raise ValueError(f"expected an output of shape (N, D), the model returned {probe.shape}")
        return probe.shape[1]

    def embed(self, image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        if not faces:
            return np.zeros((0, self.dim), np.float32)
        chips = arcface_chips(image, faces)
        batch = ((chips.astype(np.float32) - 127.5) / 127.5).transpose(0, 3, 1, 2)
        if self._batched:
            raw = self._model(batch)
        else:
            raw = np.concatenate([self._model(item[None]) for item in batch])
        raw = raw.reshape(len(faces), -1).astype(np.float32)
        return raw / np.linalg.norm(raw, axis=1, keepdims=True)
