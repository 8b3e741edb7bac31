"""What every page of the UI shares: the API client, image input, error display and face drawing."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import streamlit as st
from PIL import Image, ImageOps

from facegate.annotate import draw_faces
from facegate.config import get_settings
from facegate.ui.client import ApiClient, ApiError, Upload

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Extensions the browser's file picker offers; the API sniffs the real type from the bytes.
IMAGE_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff"]
# Large photos are drawn at full size (so marks scale with the face) and shrunk only for display.
DISPLAY_SIZE = (1600, 1600)
NO_SAMPLE = "(none)"
_FLASH = "facegate-flash"


@st.cache_resource
def api() -> ApiClient:
    """One client per UI process: httpx's connection pool is thread-safe and shared by all sessions."""
    return ApiClient.from_settings(get_settings())


def samples_dir() -> Path:
    """Sample photos the pages offer besides uploading: `$FACEGATE_DATA_DIR/samples/`."""
    return get_settings().facegate_data_dir / "samples"


def sample_images() -> list[Path]:
    folder = samples_dir()
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower().lstrip(".") in IMAGE_TYPES)


def image_input(key: str, label: str = "Upload a photo") -> Upload | None:
    """A file uploader, plus a sample picker when sample photos exist; the upload wins."""
    uploaded = st.file_uploader(label, type=IMAGE_TYPES, key=f"{key}-upload")
    if uploaded is not None:
        return Upload(uploaded.name, uploaded.getvalue())
    samples = {path.name: path for path in sample_images()}
    if not samples:
        return None
    choice = st.selectbox("…or pick a sample", [NO_SAMPLE, *samples], key=f"{key}-sample")
    if choice == NO_SAMPLE:
        return None
    return Upload(choice, samples[choice].read_bytes())


def call(
    spinner: str, request: Callable[[], T], failure: str = "", hints: Mapping[int, str] | None = None
) -> T | None:
    """Run an API request under a spinner; on failure show a readable error and return None.

    The error reads `<failure>: <the API's detail>`, plus the hint for its HTTP status, if any.
    """
    with st.spinner(spinner):
        try:
            return request()
        except ApiError as exc:
            message = f"{failure}: {exc}" if failure else str(exc)
            if hint := (hints or {}).get(exc.status or 0):
                message = f"{message}. {hint}"
            st.error(message, icon=":material/error:")
            return None


def counted(count: int, noun: str, plural: str = "") -> str:
    """`1 face`, `2 faces`, `2 people` (pass the plural when it is not noun + s)."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


def flash(message: str) -> None:
    """Rerun the page and show `message` at its top, so the page is drawn with the change applied."""
    st.session_state[_FLASH] = message
    st.rerun()


def show_flash() -> None:
    if message := st.session_state.pop(_FLASH, None):
        st.success(message, icon=":material/check_circle:")


def show_faces(
    image: Upload,
    boxes: Sequence[Sequence[float]],
    keypoints: Sequence[Mapping[str, Sequence[float]]],
    labels: Sequence[str],
) -> None:
    """The photo as the API saw it (EXIF orientation applied), with every face drawn on it."""
    try:
        picture = ImageOps.exif_transpose(Image.open(io.BytesIO(image.data)))
    except (OSError, Image.DecompressionBombError) as exc:
        # The API decoded it, but this Pillow cannot: say so instead of failing the page.
        logger.warning("cannot display %s: %s", image.name, exc)
        st.warning(f"The faces were found, but {image.name} cannot be displayed here.")
        return
    drawn = draw_faces(picture, boxes, keypoints, labels)
    drawn.thumbnail(DISPLAY_SIZE)
    st.image(drawn, caption=image.name, output_format="JPEG")
