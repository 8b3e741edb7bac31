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
from facegate.embedding.base import Embedder
from facegate.faces import Face
from facegate.runtime import DEFAULT_RUNTIME, RuntimeOptions, create_session

CHIP_SIZE = 112
# insightface's reference landmarks for a 112 × 112 crop, in `Face.keypoints` order.
TEMPLATE = np.array(
    [
        [38.2946, 51.6963],  # left eye (viewer's left)
        [73.5318, 51.5014],  # right eye
        [56.0252, 71.7366],  # nose
        [41.5493, 92.3655],  # mouth left
        [70.7299, 92.2041],  # mouth right
    ],
    dtype=np.float64,
)


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2 × 3 matrix of the rotation + uniform scale + translation that maps `source` points onto
    `target` points with the least squared error (no reflection)."""
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    source_centred, target_centred = source - source_mean, target - target_mean
    covariance = target_centred.T @ source_centred / len(source)
    u, singular, vt = np.linalg.svd(covariance)
    signs = np.array([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rotation = u @ np.diag(signs) @ vt
    scale = (singular * signs).sum() / source_centred.var(axis=0).sum()
    translation = target_mean - scale * rotation @ source_mean
    return np.hstack([scale * rotation, translation[:, None]])


def warp_affine(image: Image.Image, matrix: np.ndarray, size: int) -> np.ndarray:
    """`image` under the 2 × 3 `matrix` (input pixel → output pixel, pixel centres at integers),
    bilinear, black outside, as a (size, size, 3) uint8 array."""
    inverse = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]
    # Pillow samples the input at inverse(out + 0.5) − 0.5; shift so pixel centres map exactly.
    linear = inverse[:, :2]
    offset = inverse[:, 2] - linear @ [0.5, 0.5] + 0.5
    data = (linear[0, 0], linear[0, 1], offset[0], linear[1, 0], linear[1, 1], offset[1])
    warped = image.transform((size, size), Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR)
    return np.asarray(warped)


def arcface_chips(image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
    """(len(faces), 112, 112, 3) uint8 RGB crops with the keypoints on the template."""
    picture = Image.fromarray(np.ascontiguousarray(image))
    chips = [
        warp_affine(picture, similarity_transform(face.keypoints, TEMPLATE), CHIP_SIZE) for face in faces
    ]
    return np.stack(chips) if chips else np.zeros((0, CHIP_SIZE, CHIP_SIZE, 3), np.uint8)


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
