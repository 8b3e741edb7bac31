"""Per-frame signals from 68 landmarks: eye and mouth aspect ratios and a yaw index.

Indices are those of the iBUG 300-W scheme that dlib's 68-point model uses; "first"/"second" eye
means image left/right, as everywhere in FaceGate.
"""

from __future__ import annotations

import numpy as np

JAW = np.arange(0, 17)
NOSE_TIP = 30
FIRST_EYE = np.arange(36, 42)
SECOND_EYE = np.arange(42, 48)
INNER_MOUTH = np.arange(60, 68)


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b))


def _eye_ratio(eye: np.ndarray) -> float:
    # Soukupová & Čech (2016): the two lid-to-lid heights over the corner-to-corner width.
    width = _distance(eye[0], eye[3])
    return (_distance(eye[1], eye[5]) + _distance(eye[2], eye[4])) / (2.0 * width) if width else 0.0


def eye_aspect_ratio(points: np.ndarray) -> float:
    """Mean eye aspect ratio of both eyes: about 0.25–0.35 open, under ~0.15 closed."""
    return 0.5 * (_eye_ratio(points[FIRST_EYE]) + _eye_ratio(points[SECOND_EYE]))


def mouth_aspect_ratio(points: np.ndarray) -> float:
    """Mean inner-lip opening over the inner mouth width: ~0 closed, above ~0.4 clearly open."""
    mouth = points[INNER_MOUTH]  # 60..67: corner, upper lip 61-63, corner 64, lower lip 65-67
    width = _distance(mouth[0], mouth[4])
    if not width:
        return 0.0
    heights = _distance(mouth[1], mouth[7]) + _distance(mouth[2], mouth[6]) + _distance(mouth[3], mouth[5])
    return heights / (3.0 * width)


def _eye_line_angle(points: np.ndarray) -> float:
    first, second = points[FIRST_EYE].mean(axis=0), points[SECOND_EYE].mean(axis=0)
    return float(np.arctan2(second[1] - first[1], second[0] - first[0]))


def yaw_index(points: np.ndarray) -> float:
    """Where the nose tip sits between the two ends of the jaw line, in [-1, 1]; 0 is frontal.

    Measured along the eye line, so rolling the head (or rotating a photo) does not change it.
    Positive: the nose is nearer the image-right end of the jaw, i.e. in an unmirrored camera
    image the person has turned to their own left. A flat picture keeps its value under any
    similarity or affine motion, which is the first reason a photo cannot "turn".
    """
    angle = _eye_line_angle(points)
    along = points @ np.array([np.cos(angle), np.sin(angle)])
    first, second, nose = along[JAW[0]], along[JAW[-1]], along[NOSE_TIP]
    span = second - first
    if span <= 0:
        return 0.0
    return float(np.clip((2.0 * nose - first - second) / span, -1.0, 1.0))
