"""Simulated presentation attacks: how a flat picture looks when it is tilted or moved.

The calibration benchmark and the tests use these to produce the frames a print or a phone
screen would give in front of a camera; the service itself never calls them.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def _rotation(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    yaw, pitch, roll = np.radians([yaw_deg, pitch_deg, roll_deg])
    about_y = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    about_x = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]])
    about_z = np.array([[np.cos(roll), -np.sin(roll), 0], [np.sin(roll), np.cos(roll), 0], [0, 0, 1]])
    return about_z @ about_x @ about_y


def tilt_homography(
    size: tuple[int, int],
    centre: tuple[float, float],
    yaw_deg: float = 0.0,
    pitch_deg: float = 0.0,
    roll_deg: float = 0.0,
    shift: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """The image-to-image homography of a picture facing the camera, rotated about `centre`.

    The picture fills the view of a pinhole camera whose focal length is the image's larger side
    (about a 53° field of view, a typical webcam): tilting it about its vertical axis (`yaw_deg`)
    or horizontal axis (`pitch_deg`) gives the perspective a held print shows; `roll_deg` spins it
    in its plane and `shift` slides it (pixels). The distance to the camera cancels out.
    """
    width, height = size
    focal = float(max(width, height))
    camera = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]])
    inverse = np.linalg.inv(camera)
    rotation = _rotation(yaw_deg, pitch_deg, roll_deg)
    pivot = inverse @ np.array([centre[0], centre[1], 1.0])  # the centre on the plane at depth 1
    plane = rotation @ inverse + np.outer((np.eye(3) - rotation) @ pivot, [0.0, 0.0, 1.0])
    matrix = camera @ plane
    matrix = np.array([[1, 0, shift[0]], [0, 1, shift[1]], [0, 0, 1]]) @ matrix
    return matrix / matrix[2, 2]


def warp_image(image: np.ndarray, matrix: np.ndarray, background: int = 40) -> np.ndarray:
    """`image` (RGB uint8) seen through the homography `matrix`, same size, uncovered parts grey."""
    height, width = image.shape[:2]
    inverse = np.linalg.inv(matrix)
    inverse = inverse / inverse[2, 2]
    warped = Image.fromarray(image).transform(
        (width, height),
        Image.Transform.PERSPECTIVE,
        tuple(inverse.flatten()[:8]),
        resample=Image.Resampling.BILINEAR,
        fillcolor=(background,) * 3,
    )
    return np.asarray(warped)
