"""The face record that detection produces and every later stage consumes, and the parameters
that ask for it (defaults in one place: the API's query, the CLI's options and the UI's sliders)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class DetectionParams:
    """The detection API's settings; defaults are the original service's."""

    min_face_size: int = 20
    threshold_pnet: float = 0.6
    threshold_rnet: float = 0.7
    threshold_onet: float = 0.7

    def __post_init__(self) -> None:
        if not _is_integer(self.min_face_size) or self.min_face_size < 1:
            raise ValueError(f"min_face_size must be an integer >= 1, got {self.min_face_size!r}")
        for name in ("threshold_pnet", "threshold_rnet", "threshold_onet"):
            value = getattr(self, name)
            if not _is_real(value) or not 0.0 <= value <= 1.0:  # also refuses NaN
                raise ValueError(f"{name} must be a number between 0 and 1, got {value!r}")


def _is_integer(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


DEFAULT_DETECTION = DetectionParams()

KEYPOINT_NAMES: tuple[str, ...] = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


@dataclass(frozen=True, slots=True)
class Face:
    """One detected face, in pixels of the decoded image.

    `box` is (x1, y1, x2, y2); `keypoints` is a (5, 2) float array in KEYPOINT_NAMES order, where
    left/right are from the viewer's side (image left = `left_eye`), as in the reference MTCNN.
    """

    box: tuple[float, float, float, float]
    score: float
    keypoints: np.ndarray

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    def keypoints_dict(self) -> dict[str, list[float]]:
        return {
            name: [float(x), float(y)] for name, (x, y) in zip(KEYPOINT_NAMES, self.keypoints, strict=True)
        }


def detection_dict(faces: list[Face]) -> dict[str, list]:
    """The detection API's JSON body: parallel lists of boxes, scores and keypoints."""
    return {
        "boxes": [list(face.box) for face in faces],
        "scores": [face.score for face in faces],
        "keypoints": [face.keypoints_dict() for face in faces],
    }
