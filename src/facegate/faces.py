"""The face record that detection produces and every later stage consumes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
