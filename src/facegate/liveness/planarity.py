"""The flat-photo check: how far landmarks move off the best plane-to-plane mapping.

A print or a screen moved or tilted in front of the camera maps every landmark of one frame onto
the next by a single homography. A real head turning does not: the nose and the
sides of the jaw leave the plane of the eyes and mouth corners. The residual after the best
homography, relative to the face's size, separates the two (see `benchmarks/liveness_calibrate.py`).
"""

from __future__ import annotations

import numpy as np

# Points that stay put on a face that does not change expression: the jaw sides (not the chin,
# which drops with the mouth), the nose, the eye corners and the mouth corners. Lids, brows and
# lips are left out so a blink or a smile does not look like depth.
RIGID_POINTS = np.array([*range(0, 6), *range(11, 17), *range(27, 36), 36, 39, 42, 45, 48, 54])


def _normalising_transform(points: np.ndarray) -> np.ndarray:
    """Hartley's conditioning: centroid to the origin, mean distance √2 (keeps the SVD stable)."""
    centre = points.mean(axis=0)
    spread = np.sqrt(((points - centre) ** 2).sum(axis=1)).mean()
    scale = np.sqrt(2.0) / spread if spread > 0 else 1.0
    return np.array([[scale, 0.0, -scale * centre[0]], [0.0, scale, -scale * centre[1]], [0.0, 0.0, 1.0]])


def _homogeneous(points: np.ndarray) -> np.ndarray:
    return np.hstack([points, np.ones((len(points), 1))])


def apply_homography(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    mapped = _homogeneous(points) @ matrix.T
    return mapped[:, :2] / mapped[:, 2:3]


def fit_homography(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 3×3 homography mapping `source` onto `target` ((n, 2), n ≥ 4) by normalised DLT."""
    if len(source) < 4 or source.shape != target.shape:
        raise ValueError("a homography needs at least 4 point pairs of the same shape")
    t_source, t_target = _normalising_transform(source), _normalising_transform(target)
    src = apply_homography(t_source, source)
    dst = apply_homography(t_target, target)
    rows = []
    for (x, y), (u, v) in zip(src, dst, strict=True):
        rows.append([-x, -y, -1.0, 0.0, 0.0, 0.0, u * x, u * y, u])
        rows.append([0.0, 0.0, 0.0, -x, -y, -1.0, v * x, v * y, v])
    _, _, vt = np.linalg.svd(np.array(rows))
    conditioned = vt[-1].reshape(3, 3)
    matrix = np.linalg.inv(t_target) @ conditioned @ t_source
    return matrix / matrix[2, 2]


def face_scale(points: np.ndarray) -> float:
    """The RMS distance of the rigid points from their centroid: the face's size in pixels."""
    rigid = points[RIGID_POINTS]
    return float(np.sqrt(((rigid - rigid.mean(axis=0)) ** 2).sum(axis=1).mean()))


def planar_residual(reference: np.ndarray, current: np.ndarray) -> float:
    """RMS distance of the rigid landmarks of `current` from the best homography image of
    `reference`'s, as a fraction of the face's size in `current` (so the camera distance and
    the image resolution cancel out). Near 0 for a flat picture; larger for a head that turned."""
    source, target = reference[RIGID_POINTS], current[RIGID_POINTS]
    mapped = apply_homography(fit_homography(source, target), source)
    rms = float(np.sqrt(((mapped - target) ** 2).sum(axis=1).mean()))
    scale = face_scale(current)
    return rms / scale if scale > 0 else 0.0
