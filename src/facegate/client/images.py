"""Turning what a caller holds (a path, bytes, a file, a PIL image, a NumPy array) into an upload.

Pillow and NumPy are optional: a PIL image or an array can only exist where they are installed, so
they are looked up in `sys.modules` instead of imported. Arrays are encoded with Pillow.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TypeGuard, Union

if TYPE_CHECKING:
    import numpy
    import PIL.Image

ImageInput = Union[str, os.PathLike[str], bytes, bytearray, BinaryIO, "PIL.Image.Image", "numpy.ndarray"]

# The API sniffs the type from the bytes, so a generic content type is enough.
_CONTENT_TYPE = "application/octet-stream"


def upload(image: ImageInput, name: str = "image") -> tuple[str, bytes, str]:
    """A multipart file part `(file name, bytes, content type)`; the file name shows in the API's messages."""
    if isinstance(image, bytes | bytearray):
        return (name, bytes(image), _CONTENT_TYPE)
    if isinstance(image, str | os.PathLike):
        path = Path(image)
        return (path.name, path.read_bytes(), _CONTENT_TYPE)
    if _is_pil_image(image):
        return (f"{name}.png", _png(image), "image/png")
    if _is_array(image):
        return (f"{name}.png", _png(_array_image(image)), "image/png")
    if isinstance(image, io.TextIOBase):
        raise TypeError("open the image file in binary mode ('rb')")
    if hasattr(image, "read"):
        data = image.read()
        return (Path(getattr(image, "name", None) or name).name, data, _CONTENT_TYPE)
    raise TypeError(
        f"an image is a path, bytes, a binary file, a PIL image or a NumPy array, not {type(image).__name__}"
    )


def frame_bytes(image: ImageInput) -> bytes:
    """The bytes of one stream frame (a WebSocket binary message)."""
    return upload(image)[1]


def _is_pil_image(image: object) -> TypeGuard[PIL.Image.Image]:
    module = sys.modules.get("PIL.Image")
    return module is not None and isinstance(image, module.Image)


def _is_array(image: object) -> TypeGuard[numpy.ndarray]:
    module = sys.modules.get("numpy")
    return module is not None and isinstance(image, module.ndarray)


def _png(image: PIL.Image.Image) -> bytes:
    # PNG is lossless: the API sees exactly the pixels the caller has.
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _array_image(array: numpy.ndarray) -> PIL.Image.Image:
    """An RGB (H×W×3), RGBA (H×W×4) or grayscale (H×W) uint8 array as a PIL image."""
    try:
        from PIL import Image
    except ImportError:
        raise ImportError(
            "sending a NumPy array needs Pillow: pip install 'facegate-client[images]'"
        ) from None
    if (
        array.dtype != "uint8"
        or array.ndim not in (2, 3)
        or (array.ndim == 3 and array.shape[2] not in (3, 4))
    ):
        raise ValueError(
            f"an image array is uint8 H×W, H×W×3 (RGB) or H×W×4 (RGBA), not {array.dtype} {array.shape}"
        )
    return Image.fromarray(array)
