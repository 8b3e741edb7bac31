"""The aligned face chip: one model-neutral picture of a face, kept so that a gallery can move to
another embedding model without anyone enrolling again, and so that an operator can see the face.

A chip is the face turned upright by the similarity transform that puts MTCNN's five keypoints on
the ArcFace template (the standard 112 × 112 layout every ArcFace-class model is trained on), scaled
by `CHIP_SCALE` and centred in a `CHIP_SIZE` square. Every shipped model's own crop lies inside it:
the ArcFace 112 layout at its centre with a quarter of margin around, which also holds dlib's 150 ×
150 chip (its 25% padding around the face). With the picture go the face's box and keypoints in chip
pixels, so that any embedder re-embeds a stored face as `embed(chip.pixels(), [chip.face])`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from facegate.faces import Face

# insightface's reference landmarks for a 112 × 112 crop, in `Face.keypoints` order.
TEMPLATE = np.array(
    [
        [38.2946, 51.6963],  # left eye (viewer's left)
        [73.5318, 51.5014],  # right eye
        [56.0252, 71.7366],  # nose
        [41.5493, 92.3655],  # mouth left
        [70.7299, 92.2041],  # mouth right
    ],
    dtype=np.float64,
)
TEMPLATE_SIZE = 112

CHIP_SIZE = 256
CHIP_SCALE = 1.5  # the 112 layout becomes 168 px: more detail than any shipped model's input
# The template in chip pixels: scaled about the 112 square's centre, which goes to the chip's centre.
CHIP_TEMPLATE = (TEMPLATE - TEMPLATE_SIZE / 2) * CHIP_SCALE + CHIP_SIZE / 2
# ~15-20 KB a face: a million faces in ~20 GB, and no model measured here tells q92 from lossless.
JPEG_QUALITY = 92


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2 × 3 matrix of the rotation + uniform scale + translation that maps `source` points onto
    `target` points with the least squared error (no reflection; Umeyama 1991)."""
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    source_centred, target_centred = source - source_mean, target - target_mean
    covariance = target_centred.T @ source_centred / len(source)
    u, singular, vt = np.linalg.svd(covariance)
    signs = np.array([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rotation = u @ np.diag(signs) @ vt
    scale = (singular * signs).sum() / source_centred.var(axis=0).sum()
    translation = target_mean - scale * rotation @ source_mean
    return np.hstack([scale * rotation, translation[:, None]])


def warp_affine(image: Image.Image, matrix: np.ndarray, size: int) -> np.ndarray:
    """`image` under the 2 × 3 `matrix` (input pixel → output pixel, pixel centres at integers),
    bilinear, black outside, as a (size, size, 3) uint8 array."""
    inverse = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]
    # Pillow samples the input at inverse(out + 0.5) − 0.5; shift so pixel centres map exactly.
    linear = inverse[:, :2]
    offset = inverse[:, 2] - linear @ [0.5, 0.5] + 0.5
    data = (linear[0, 0], linear[0, 1], offset[0], linear[1, 0], linear[1, 1], offset[1])
    warped = image.transform((size, size), Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR)
    return np.asarray(warped)


@dataclass(frozen=True, slots=True)
class FaceChip:
    """A face's chip as stored: JPEG bytes, and the face (box, keypoints, score) in chip pixels."""

    jpeg: bytes
    face: Face

    def pixels(self) -> np.ndarray:
        """The chip as an RGB uint8 (CHIP_SIZE, CHIP_SIZE, 3) array."""
        with Image.open(io.BytesIO(self.jpeg)) as picture:
            return np.asarray(picture.convert("RGB"))


def make_chip(image: np.ndarray, face: Face) -> FaceChip:
    """The chip of `face` in the RGB uint8 `image`."""
    matrix = similarity_transform(face.keypoints, CHIP_TEMPLATE)
    pixels = warp_affine(Image.fromarray(np.ascontiguousarray(image)), matrix, CHIP_SIZE)
    return FaceChip(encode_jpeg(pixels), _face_in_chip(face, matrix))


def encode_jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def _face_in_chip(face: Face, matrix: np.ndarray) -> Face:
    """`face` moved into chip pixels: keypoints exactly; the box (which the rotation would tilt) as
    the upright box of the same centre and scaled size, which is what box-based aligners expect."""
    linear, shift = matrix[:, :2], matrix[:, 2]
    keypoints = face.keypoints @ linear.T + shift
    scale = float(np.sqrt(abs(np.linalg.det(linear))))
    x1, y1, x2, y2 = face.box
    cx, cy = linear @ [(x1 + x2) / 2, (y1 + y2) / 2] + shift
    half_w, half_h = scale * (x2 - x1) / 2, scale * (y2 - y1) / 2
    box = (float(cx - half_w), float(cy - half_h), float(cx + half_w), float(cy + half_h))
    return Face(box, face.score, keypoints.astype(np.float32))
