"""dlib's 68-point landmarks inside the detector's box."""

from __future__ import annotations

import numpy as np

from facegate.dlib_models import face_rectangle, shape_predictor68
from facegate.faces import Face


def landmarks68(image: np.ndarray, face: Face) -> np.ndarray:
    """(68, 2) float64 pixel coordinates in dlib's iBUG 300-W order for `face` of RGB uint8 `image`."""
    shape = shape_predictor68()(np.ascontiguousarray(image), face_rectangle(face))
    return np.array([(part.x, part.y) for part in shape.parts()], dtype=np.float64)
