"""Drawing faces (boxes, keypoints, numbered labels) on an image, for the API, the CLI and the UI."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from PIL import Image, ImageDraw, ImageFont

Colour = tuple[int, int, int]

BOX_COLOUR: Colour = (0, 200, 255)
# Recognition: a registered person and a stranger must differ at a glance (and for colour-blind
# eyes in brightness too: a light green against a dark orange).
KNOWN_COLOUR: Colour = (90, 220, 110)
UNKNOWN_COLOUR: Colour = (235, 120, 20)
LABEL_TEXT: Colour = (0, 0, 0)
KEYPOINT_COLOURS: Mapping[str, Colour] = {
    "left_eye": (255, 64, 64),
    "right_eye": (64, 255, 64),
    "nose": (255, 255, 0),
    "mouth_left": (255, 64, 255),
    "mouth_right": (64, 160, 255),
}


def draw_faces(
    image: Image.Image,
    boxes: Sequence[Sequence[float]],
    keypoints: Sequence[Mapping[str, Sequence[float]]] = (),
    labels: Sequence[str] = (),
    colours: Sequence[Colour] = (),
) -> Image.Image:
    """Return a copy of `image` with each box, its keypoints and its numbered label drawn on it.

    Face i (from 1, in the order given) is labelled `i · label`, so a list or table of the faces in
    the same order can say which box is which. Each face is drawn in its colour (`BOX_COLOUR` when
    none is given). Line widths and font size follow the image size so the marks stay visible on
    large photos.
    """
    canvas = image.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    scale = max(canvas.size) / 640
    width = max(2, round(2 * scale))
    radius = max(2, round(3 * scale))
    font = ImageFont.load_default(size=max(12, round(14 * scale)))
    for index, box in enumerate(boxes):
        x1, y1, x2, y2 = (float(v) for v in box)
        colour = colours[index] if index < len(colours) else BOX_COLOUR
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        if index < len(keypoints):
            for name, (x, y) in keypoints[index].items():
                dot = KEYPOINT_COLOURS.get(name, colour)
                draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=dot)
        label = labels[index] if index < len(labels) else ""
        _draw_label(draw, (x1, y1), f"{index + 1} · {label}" if label else str(index + 1), font, colour)
    return canvas


def _draw_label(
    draw: ImageDraw.ImageDraw,
    corner: tuple[float, float],
    text: str,
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
    colour: Colour,
) -> None:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    height = bottom - top + 4
    x, y = corner
    y = y - height if y >= height else y  # above the box, or inside it at the top edge
    draw.rectangle((x, y, x + right - left + 6, y + height), fill=colour)
    draw.text((x + 3, y + 2 - top), text, fill=LABEL_TEXT, font=font)
