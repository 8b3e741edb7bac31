"""Faces drawn on an image: numbered labels (so a table can say which box is which), colours."""

from __future__ import annotations

import numpy as np
from PIL import Image

from facegate.annotate import BOX_COLOUR, KNOWN_COLOUR, LABEL_TEXT, UNKNOWN_COLOUR, draw_faces

GREY = (128, 128, 128)
BOXES = [(100, 100, 200, 220), (400, 150, 480, 250)]


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def tag(drawn: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The strip above a box, where its label is drawn."""
    x1, y1, _, _ = box
    return drawn[y1 - 30 : y1, x1 : x1 + 200]


def test_each_face_is_drawn_in_its_colour() -> None:
    blank = Image.new("RGB", (640, 480), GREY)
    drawn = pixels(draw_faces(blank, BOXES, colours=[KNOWN_COLOUR, UNKNOWN_COLOUR]))
    (ax, ay, _, _), (bx, by, _, _) = BOXES
    assert tuple(drawn[ay + 50, ax]) == KNOWN_COLOUR  # the left edge of each box
    assert tuple(drawn[by + 50, bx]) == UNKNOWN_COLOUR
    assert tuple(pixels(draw_faces(blank, BOXES[:1]))[ay + 50, ax]) == BOX_COLOUR


def test_every_face_gets_its_number_even_without_a_label() -> None:
    drawn = pixels(draw_faces(Image.new("RGB", (640, 480), GREY), BOXES, labels=["Alice 97%"]))
    first, second = (tag(drawn, box) for box in BOXES)
    for strip in (first, second):
        assert (strip == BOX_COLOUR).all(axis=-1).any()  # the tag
        assert (np.abs(strip.astype(int) - LABEL_TEXT).max(axis=-1) < 60).any()  # its (smoothed) text
    # "1 · Alice 97%" is a long tag, the bare "2" a short one.
    tag_width = [int((strip == BOX_COLOUR).all(axis=-1).any(axis=0).sum()) for strip in (first, second)]
    assert tag_width[0] > 3 * tag_width[1] > 0


def test_numbers_follow_the_order_of_the_boxes() -> None:
    """Face 1 and face 2 in the same place carry different numbers: the drawn tags differ."""
    blank = Image.new("RGB", (640, 480), GREY)
    box = BOXES[0]
    alone = tag(pixels(draw_faces(blank, [box])), box)
    second = tag(pixels(draw_faces(blank, [BOXES[1], box])), box)
    assert not np.array_equal(alone, second)
