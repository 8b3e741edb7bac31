"""The model-neutral face chip (facegate.chips): geometry, storage form, and that an embedder sees
the same face in the chip as in the photo it came from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facegate.chips import CHIP_SIZE, CHIP_TEMPLATE, FaceChip, make_chip
from facegate.detection import MTCNN
from facegate.embedding import DlibOnnxEmbedder
from facegate.imaging import load_image_file
from facegate.recognition import cosine_distance
from facegate.runtime import RuntimeOptions
from tests.data import FACES

PORTRAIT = FACES / "portraits/Angelina_Jolie/deepface_img5.jpg"
OTHER = FACES / "portraits/Angelina_Jolie/deepface_img6.jpg"


@pytest.fixture(scope="module")
def detector() -> MTCNN:
    return MTCNN(RuntimeOptions(threads=1))


def chip_of(detector: MTCNN, path: Path) -> tuple[np.ndarray, FaceChip]:
    image = load_image_file(path)
    face = max(detector.detect(image), key=lambda found: found.area)
    return image, make_chip(image, face)


def test_the_chip_is_an_upright_jpeg_with_the_keypoints_on_the_template(detector: MTCNN) -> None:
    _, chip = chip_of(detector, PORTRAIT)
    assert chip.jpeg[:2] == b"\xff\xd8"  # JPEG
    assert chip.pixels().shape == (CHIP_SIZE, CHIP_SIZE, 3)
    # Five points cannot all land exactly (a similarity has four degrees of freedom), but near.
    assert np.abs(chip.face.keypoints - CHIP_TEMPLATE).max() < 12
    x1, y1, x2, y2 = chip.face.box
    assert 0 <= x1 < CHIP_TEMPLATE[:, 0].min() and CHIP_TEMPLATE[:, 0].max() < x2 <= CHIP_SIZE
    assert 0 <= y1 < CHIP_TEMPLATE[:, 1].min() and CHIP_TEMPLATE[:, 1].max() < y2 <= CHIP_SIZE


def test_an_embedder_sees_the_same_face_in_the_chip(detector: MTCNN, tmp_path: Path) -> None:
    embedder = DlibOnnxEmbedder(tmp_path, mirror=True, runtime=RuntimeOptions(threads=1))
    image, chip = chip_of(detector, PORTRAIT)
    face = max(detector.detect(image), key=lambda found: found.area)
    from_photo = embedder.embed(image, [face])[0]
    from_chip = embedder.embed(chip.pixels(), [chip.face])[0]
    _, other_chip = chip_of(detector, OTHER)
    other = embedder.embed(other_chip.pixels(), [other_chip.face])[0]
    # The same photo through its chip is much nearer than another photo of the same person.
    assert cosine_distance(from_photo, from_chip) < 0.25 * cosine_distance(from_photo, other)
    assert cosine_distance(from_photo, from_chip) < 0.02
