"""Whether a detected face is good enough to be searched or enrolled.

A face too small, too blurred or too far from frontal gives an embedding that lies near everyone
and no one: searched, it is the likeliest to be taken for someone else; enrolled, it attracts
strangers to that person. Each measure is cheap and needs only the image and MTCNN's five
keypoints; the bounds are settings, calibrated on the shared photos by `benchmarks/quality.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from facegate.faces import Face

# The face box is compared at one size, so that the sharpness of a large and a small face mean the same.
SHARPNESS_SIZE = 64


@dataclass(frozen=True, slots=True)
class QualityBounds:
    min_eye_distance: float  # pixels between the eyes
    min_sharpness: float  # see `sharpness`
    max_yaw: float  # see `yaw`


@dataclass(frozen=True, slots=True)
class Quality:
    eye_distance: float
    sharpness: float
    yaw: float

    def problem(self, bounds: QualityBounds) -> str | None:
        """Why the face is refused, in words for the client; None when it is good enough."""
        if self.eye_distance < bounds.min_eye_distance:
            return (
                f"the face is too small: {self.eye_distance:.0f} px between the eyes, "
                f"at least {bounds.min_eye_distance:.0f} needed"
            )
        if abs(self.yaw) > bounds.max_yaw:
            return (
                f"the face is turned too far from the camera (yaw {self.yaw:+.2f}, "
                f"at most ±{bounds.max_yaw:.2f})"
            )
        if self.sharpness < bounds.min_sharpness:
            return (
                f"the face is too blurred (sharpness {self.sharpness:.3f}, "
                f"at least {bounds.min_sharpness:.3f})"
            )
        return None


def assess(image: np.ndarray, face: Face) -> Quality:
    points = np.asarray(face.keypoints, np.float64)
    return Quality(eye_distance=_eye_distance(points), sharpness=sharpness(image, face), yaw=yaw(points))


def _eye_distance(points: np.ndarray) -> float:
    return float(np.linalg.norm(points[1] - points[0]))


def yaw(points: np.ndarray) -> float:
    """How far the nose sits off the face's midline (eye centre to mouth centre), in half eye
    distances: about 0 frontal, ±1 when the nose reaches the line of an eye (a profile)."""
    eyes, mouth, nose = points[:2].mean(axis=0), points[3:].mean(axis=0), points[2]
    midline = mouth - eyes
    length = float(np.linalg.norm(midline))
    half_eyes = _eye_distance(points) / 2
    if length == 0 or half_eyes == 0:
        return 0.0
    offset = nose - eyes
    cross = midline[0] * offset[1] - midline[1] * offset[0]
    return float(-cross / length / half_eyes)


def sharpness(image: np.ndarray, face: Face) -> float:
    """The Laplacian's variance over the face box's own intensity variance, at a fixed size: the
    share of the face's contrast in fine detail, whatever its size, brightness or contrast."""
    x1, y1, x2, y2 = face.box
    height, width = image.shape[:2]
    box = (max(0, int(x1)), max(0, int(y1)), min(width, int(np.ceil(x2))), min(height, int(np.ceil(y2))))
    if box[2] - box[0] < 2 or box[3] - box[1] < 2:
        return 0.0
    crop = (
        Image.fromarray(image)
        .crop(box)
        .convert("L")
        .resize((SHARPNESS_SIZE, SHARPNESS_SIZE), Image.Resampling.BOX)
    )
    gray = np.asarray(crop, np.float64)
    laplacian = gray[1:-1, :-2] + gray[1:-1, 2:] + gray[:-2, 1:-1] + gray[2:, 1:-1] - 4 * gray[1:-1, 1:-1]
    contrast = float(gray.var())
    return float(laplacian.var() / contrast) if contrast > 0 else 0.0
