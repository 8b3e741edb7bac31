"""dlib's face alignment: five landmarks inside the detector's box, then a 150 × 150 chip.

Both dlib embedders (dlib's own runtime and ONNX Runtime) take their input from here, so they
see identical pixels and produce the same vectors.
"""

from __future__ import annotations

from collections.abc import Sequence

import dlib
import numpy as np

from facegate.dlib_models import face_rectangle, shape_predictor5
from facegate.faces import Face

CHIP_SIZE = 150
CHIP_PADDING = 0.25  # dlib's default, the padding the ResNet was trained with


def face_chips(image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
    """(len(faces), 150, 150, 3) uint8 RGB chips, aligned the way `dlib.get_face_chip` does it."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    pixels = np.ascontiguousarray(image)
    predictor = shape_predictor5()
    shapes = dlib.full_object_detections()
    for face in faces:
        shapes.append(predictor(pixels, face_rectangle(face)))
    chips = dlib.get_face_chips(pixels, shapes, size=CHIP_SIZE, padding=CHIP_PADDING)
    return np.stack(chips) if faces else np.zeros((0, CHIP_SIZE, CHIP_SIZE, 3), np.uint8)
