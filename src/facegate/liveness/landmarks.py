"""dlib's 68-point landmarks inside the MTCNN box, the model loaded once per process."""

from __future__ import annotations

from pathlib import Path

import dlib
import face_recognition_models
import numpy as np

from facegate.embedding.alignment import face_rectangle
from facegate.embedding.models import load_once
from facegate.faces import Face

SHAPE_68_PATH = Path(face_recognition_models.pose_predictor_model_location())
POINTS = 68


@load_once
def predictor68() -> dlib.shape_predictor:
    # ~100 MB; a shape predictor only reads its trees at prediction time, so one instance serves
    # every thread (the 5-point one in `embedding.alignment` is shared the same way).
    return dlib.shape_predictor(str(SHAPE_68_PATH))


def landmarks68(image: np.ndarray, face: Face) -> np.ndarray:
    """(68, 2) float64 pixel coordinates in dlib's iBUG 300-W order for `face` of RGB uint8 `image`."""
    shape = predictor68()(np.ascontiguousarray(image), face_rectangle(face))
    return np.array([(part.x, part.y) for part in shape.parts()], dtype=np.float64)
