"""`create_embedder`: the embedder that `FACE_EMBEDDER` names, built from the settings."""

from __future__ import annotations

from facegate.config import Settings
from facegate.embedding.arcface import ArcFaceEmbedder
from facegate.embedding.base import Embedder
from facegate.embedding.dlib_resnet import DlibEmbedder, DlibOnnxEmbedder

# Average each face with its mirror image (see benchmarks/calibrate.py for the measurement).
MIRROR = True


def create_embedder(settings: Settings) -> Embedder:
    """The configured embedder; the dlib ResNet on ONNX Runtime unless `FACE_EMBEDDER` says otherwise."""
    if settings.face_embedder == "dlib":
        return DlibEmbedder(mirror=MIRROR)
    if settings.face_embedder == "arcface":
        if settings.arcface_model_path is None:
            raise ValueError("FACE_EMBEDDER=arcface needs ARCFACE_MODEL_PATH (an insightface-format .onnx)")
        return ArcFaceEmbedder(settings.arcface_model_path, settings.providers(), settings.session_threads())
    return DlibOnnxEmbedder(
        settings.facegate_data_dir / "models",
        mirror=MIRROR,
        providers=settings.providers(),
        threads=settings.session_threads(),
    )
