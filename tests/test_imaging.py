"""Decoding uploads: accepted formats, orientation, colour modes and every refusal."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from facegate.imaging import (
    CorruptImage,
    ImageTooLarge,
    UnsupportedImageType,
    decode_image,
    load_image_file,
)
from tests.data import FACES

LIMITS = {"max_bytes": 20 * 1024 * 1024, "max_pixels": 40_000_000}


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def gradient(width: int = 64, height: int = 48) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)
    rgb = np.stack(
        [np.tile(x, (height, 1)), np.tile(x[::-1], (height, 1)), np.full((height, width), 90, np.uint8)]
    )
    return Image.fromarray(np.moveaxis(rgb, 0, -1))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF"])
def test_each_accepted_format_decodes_to_rgb(fmt: str) -> None:
    array = decode_image(encode(gradient(), fmt), **LIMITS)
    assert array.shape == (48, 64, 3)
    assert array.dtype == np.uint8
    # lossless formats give the pixels back exactly; JPEG/WEBP close to them
    assert np.abs(array.astype(int) - np.asarray(gradient()).astype(int)).mean() < 3


def test_webp_inside_a_jpg_name_is_decoded_by_content() -> None:
    path = next(FACES.glob("portraits/*/deepface_img47.jpg"))
    assert path.read_bytes()[8:12] == b"WEBP"
    assert load_image_file(path).ndim == 3


def test_grey_and_rgba_become_rgb() -> None:
    grey = decode_image(encode(Image.new("L", (10, 8), 77), "PNG"), **LIMITS)
    assert grey.shape == (8, 10, 3) and (grey == 77).all()
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 0))  # fully transparent: background shows
    assert (decode_image(encode(rgba, "PNG"), **LIMITS) == 255).all()
    opaque = Image.new("RGBA", (4, 4), (10, 20, 30, 255))
    assert (decode_image(encode(opaque, "PNG"), **LIMITS) == [10, 20, 30]).all()


def test_exif_orientation_is_applied() -> None:
    image = gradient(60, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    array = decode_image(encode(image, "JPEG", exif=exif), **LIMITS)
    assert array.shape == (60, 20, 3)


def test_text_is_unsupported() -> None:
    with pytest.raises(UnsupportedImageType) as info:
        decode_image(b"this is a text file named photo.jpg\n", **LIMITS)
    assert info.value.status == 415


def test_unsupported_image_format_is_415() -> None:
    with pytest.raises(UnsupportedImageType):
        decode_image(encode(gradient(), "GIF"), **LIMITS)


def test_empty_upload_is_400() -> None:
    with pytest.raises(CorruptImage) as info:
        decode_image(b"", **LIMITS)
    assert info.value.status == 400


def test_truncated_jpeg_is_400() -> None:
    data = (FACES / "portraits" / "Barack_Obama" / "fr_obama.jpg").read_bytes()
    with pytest.raises(CorruptImage):
        decode_image(data[: len(data) // 3], **LIMITS)


def test_garbage_after_a_valid_signature_is_400() -> None:
    with pytest.raises(CorruptImage):
        decode_image(b"\x89PNG\r\n\x1a\n" + b"\x00" * 200, **LIMITS)


@pytest.mark.parametrize("signature", [b"\xff\xd8\xff", b"RIFF\x00\x00\x00\x00WEBP", b"II*\x00"])
def test_an_unreadable_image_is_400_without_an_object_repr(signature: bytes) -> None:
    with pytest.raises(CorruptImage) as refused:
        decode_image(signature + b"x" * 100, **LIMITS)
    assert "cannot identify image file" in str(refused.value)
    assert " at 0x" not in str(refused.value) and "<" not in str(refused.value)  # no heap address


def test_too_many_bytes_is_413() -> None:
    data = encode(gradient(), "PNG")
    with pytest.raises(ImageTooLarge) as info:
        decode_image(data, max_bytes=len(data) - 1, max_pixels=10**9)
    assert info.value.status == 413


def test_decompression_bomb_is_refused_before_decoding() -> None:
    bomb = encode(Image.new("L", (30_000, 30_000)), "PNG")  # under 1 MB of data, 900 megapixels
    assert len(bomb) < 1_000_000
    started = time.perf_counter()
    with pytest.raises(ImageTooLarge, match="30000x30000"):
        decode_image(bomb, **LIMITS)
    assert time.perf_counter() - started < 0.5  # only the header was read


def test_pixel_limit_is_configurable() -> None:
    data = encode(gradient(64, 48), "PNG")
    assert decode_image(data, max_bytes=10**6, max_pixels=64 * 48).shape == (48, 64, 3)
    with pytest.raises(ImageTooLarge):
        decode_image(data, max_bytes=10**6, max_pixels=64 * 48 - 1)


def test_every_shared_photo_decodes() -> None:
    paths = [
        p for p in FACES.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"} and "lfw" not in p.parts
    ]
    assert len(paths) >= 90
    for path in paths:
        array = load_image_file(path)
        assert array.ndim == 3 and array.shape[2] == 3, path
