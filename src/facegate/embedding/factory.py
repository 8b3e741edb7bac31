"""`create_embedder`: the embedder that `FACE_EMBEDDER` names, built from the settings."""

from __future__ import annotations

import logging

from facegate.config import Settings
from facegate.embedding.arcface import ArcFaceEmbedder
from facegate.embedding.base import Embedder
from facegate.embedding.dlib_resnet import DlibEmbedder, DlibOnnxEmbedder
from facegate.embedding.facenet import FaceNetEmbedder
from facegate.embedding.fusion import FusionEmbedder

log = logging.getLogger(__name__)

# Average each face with its mirror image (see benchmarks/calibrate.py for the measurement).
MIRROR = True
# FACE_EMBEDDER=fusion weighs each model by 1/σ, σ = the standard deviation of its cosine
# similarities between different people, with mirror averaging: fitted on LFW fold 1 by
# benchmarks/fusion_bench.py (BENCHMARKS.md, "Second model: FaceNet and fusion").
DLIB_IMPOSTOR_STD = 0.0349
FACENET_IMPOSTOR_STD = 0.1378


def create_embedder(settings: Settings) -> Embedder:
    """The configured embedder; the dlib ResNet on ONNX Runtime unless `FACE_EMBEDDER` says otherwise."""
    embedder = _configured_embedder(settings)
    log.info("Embedder %s on %s", embedder.name, list(embedder.providers))
    return embedder


def _configured_embedder(settings: Settings) -> Embedder:
    if settings.face_embedder == "dlib":
        return DlibEmbedder(mirror=MIRROR)
    if settings.face_embedder == "arcface":
        if settings.arcface_model_path is None:
            raise ValueError("FACE_EMBEDDER=arcface needs ARCFACE_MODEL_PATH (an insightface-format .onnx)")
        return ArcFaceEmbedder(settings.arcface_model_path, settings.runtime())
    runtime = settings.runtime()
    models = settings.facegate_data_dir / "models"
    if settings.face_embedder in ("facenet", "fusion"):
        # Raises ModuleNotFoundError saying what to install when the optional wheel is missing.
        facenet = FaceNetEmbedder(models, MIRROR, runtime)
        if settings.face_embedder == "facenet":
            return facenet
        dlib = DlibOnnxEmbedder(models, MIRROR, runtime)
        return FusionEmbedder([(dlib, 1 / DLIB_IMPOSTOR_STD), (facenet, 1 / FACENET_IMPOSTOR_STD)])
    return DlibOnnxEmbedder(models, MIRROR, runtime)
