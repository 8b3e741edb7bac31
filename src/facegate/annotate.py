"""Drawing faces (boxes, keypoints, labels) on an image, for the API, the CLI and the UI."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from PIL import Image, ImageDraw, ImageFont

BOX_COLOUR = (0, 200, 255)
KEYPOINT_COLOURS: Mapping[str, tuple[int, int, int]] = {
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
) -> Image.Image:
    """Return a copy of `image` with each box, its keypoints and its label drawn on it.

    Line widths and font size follow the image size so the marks stay visible on large photos.
    """
    canvas = image.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    scale = max(canvas.size) / 640
    width = max(2, round(2 * scale))
    radius = max(2, round(3 * scale))
    font = ImageFont.load_default(size=max(12, round(14 * scale)))
    for index, box in enumerate(boxes):
        x1, y1, x2, y2 = (float(v) for v in box)
        draw.rectangle((x1, y1, x2, y2), outline=BOX_COLOUR, width=width)
        if index < len(keypoints):
            for name, (x, y) in keypoints[index].items():
                colour = KEYPOINT_COLOURS.get(name, BOX_COLOUR)
                draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour)
        if index < len(labels) and labels[index]:
            _draw_label(draw, (x1, y1), labels[index], font)
    return canvas


def _draw_label(
    draw: ImageDraw.ImageDraw, corner: tuple[float, float], text: str, font: ImageFont.ImageFont
) -> None:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    height = bottom - top + 4
    x, y = corner
    y = y - height if y >= height else y  # above the box, or inside it at the top edge
    draw.rectangle((x, y, x + right - left + 6, y + height), fill=BOX_COLOUR)
    draw.text((x + 3, y + 2 - top), text, fill=(0, 0, 0), font=font)
