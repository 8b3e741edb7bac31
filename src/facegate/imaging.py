"""Decoding untrusted uploads into RGB arrays, refusing anything dangerous before it costs much."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Every decode in the service goes through `decode_image`, which checks the pixel count from the
# header before decoding; Pillow's process-wide bomb limit would only duplicate that check with a
# fixed value, and changing it per call would race between threads.
Image.MAX_IMAGE_PIXELS = None

# Formats we accept, keyed by Pillow's format name; the file name and the client's content type
# are ignored because a ".jpg" may hold WEBP data.
ACCEPTED_FORMATS: frozenset[str] = frozenset({"JPEG", "PNG", "WEBP", "BMP", "TIFF"})

_MAGIC: tuple[tuple[bytes, int], ...] = (
    (b"\xff\xd8\xff", 0),  # JPEG / MPO
    (b"\x89PNG\r\n\x1a\n", 0),
    (b"WEBP", 8),  # RIFF....WEBP
    (b"BM", 0),
    (b"II*\x00", 0),  # TIFF little endian
    (b"MM\x00*", 0),  # TIFF big endian
)


class ImageError(ValueError):
    """An upload that cannot become an image; `status` is the HTTP status the API answers with."""

    status: int = 400


class UnsupportedImageType(ImageError):
    status = 415


class ImageTooLarge(ImageError):
    status = 413


class CorruptImage(ImageError):
    status = 400


def sniff_format(data: bytes) -> bool:
    """True when `data` starts like one of the accepted formats."""
    return any(data[offset : offset + len(magic)] == magic for magic, offset in _MAGIC)


def decode_image(data: bytes, *, max_bytes: int, max_pixels: int) -> np.ndarray:
    """Decode an upload into an RGB uint8 array (H, W, 3) as it is meant to be displayed.

    Raises `ImageTooLarge` (413), `UnsupportedImageType` (415) or `CorruptImage` (400).
    """
    if len(data) > max_bytes:
        raise ImageTooLarge(f"upload is {len(data)} bytes; the limit is {max_bytes} bytes")
    if not data:
        raise CorruptImage("the uploaded file is empty")
    if not sniff_format(data):
        raise UnsupportedImageType("not a supported image; send JPEG, PNG, WEBP, BMP or TIFF")
    with _open(data) as image:
        _check_pixels(image, max_pixels)
        try:
            return _to_rgb_array(image)
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise _corrupt(exc) from exc


def load_image_file(path: str | Path, *, max_pixels: int = 400_000_000) -> np.ndarray:
    """Decode an image file from disk the same way as an upload (CLI, tests, benchmarks)."""
    data = Path(path).read_bytes()
    return decode_image(data, max_bytes=len(data) + 1, max_pixels=max_pixels)


def _open(data: bytes) -> Image.Image:
    try:
        # Opening reads only the header, so the pixel check that follows runs before any decoding.
        image = Image.open(io.BytesIO(data), formats=sorted(ACCEPTED_FORMATS))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise _corrupt(exc) from exc
    return image


# Pillow names the file it could not read by its repr, `<_io.BytesIO object at 0x7f...>`: a heap
# address is no business of the client's.
_OBJECT_REPR = re.compile(r"\s*<[^<>]* at 0x[0-9A-Fa-f]+>")


def _corrupt(exc: Exception) -> CorruptImage:
    reason = _OBJECT_REPR.sub("", str(exc))
    return CorruptImage(f"the image data is corrupt or truncated ({reason})")


def _check_pixels(image: Image.Image, max_pixels: int) -> None:
    width, height = image.size
    if width < 1 or height < 1:
        raise CorruptImage("the image has no pixels")
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels} pixels"
        )


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    image.load()
    oriented = ImageOps.exif_transpose(image) or image
    if oriented.mode in ("RGBA", "LA", "PA") or (oriented.mode == "P" and "transparency" in oriented.info):
        # Composite on white: transparent parts of a cut-out portrait are background, and the
        # colour hidden under them (often black) would otherwise show.
        rgba = oriented.convert("RGBA")
        oriented = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return np.asarray(oriented.convert("RGB"), dtype=np.uint8)
