"""What every page of the UI shares: the API client, image input, error display and face drawing."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import streamlit as st
from PIL import Image, ImageOps

from facegate.annotate import KNOWN_COLOUR, UNKNOWN_COLOUR, Colour, draw_faces
from facegate.config import get_settings
from facegate.ui.client import ApiClient, ApiError, Upload

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Extensions the browser's file picker offers; the API sniffs the real type from the bytes.
IMAGE_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff"]
# Large photos are drawn at full size (so marks scale with the face) and shrunk only for display.
DISPLAY_SIZE = (1600, 1600)
NO_SAMPLE = "(none)"
UNKNOWN = "unknown"
LOW_QUALITY = "not searched"
# The API read the photo but refused what is in it (no face, not exactly one face).
REFUSED_PHOTO = 422
PREVIEW_WIDTH = 480  # a refused photo is shown small, under its message
_FLASH = "facegate-flash"
_GENERATION = "facegate-generation-"
COLLECTION = "collection"  # the sidebar's selector (app.py)
DEFAULT_COLLECTION = "default"  # the API's collection for calls that name none


@st.cache_resource
def api() -> ApiClient:
    """One client per UI process: httpx's connection pool is thread-safe and shared by all sessions."""
    return ApiClient.from_settings(get_settings())


def collection() -> str:
    """The collection chosen in the sidebar: every gallery, recognition and liveness call uses it."""
    return str(st.session_state.get(COLLECTION) or DEFAULT_COLLECTION)


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
    spinner: str,
    request: Callable[[], T],
    failure: str = "",
    hints: Mapping[int, str] | None = None,
    photo: Upload | None = None,
) -> T | None:
    """Run an API request under a spinner; on failure show a readable error and return None.

    The error reads `<failure>: <the API's detail>`, plus the hint for its HTTP status, if any. When
    the API refused `photo` for what is in it (no face, several faces), the photo is shown below the
    message, so the user sees what was refused.
    """
    with st.spinner(spinner):
        try:
            return request()
        except ApiError as exc:
            error = exc
    message = f"{failure}: {error}" if failure else str(error)
    if hint := (hints or {}).get(error.status or 0):
        message = f"{message}. {hint}"
    st.error(message, icon=":material/error:")
    if photo is not None and error.status == REFUSED_PHOTO:
        show_faces(photo, [], [], [], width=PREVIEW_WIDTH)
    return None


def counted(count: int, noun: str, plural: str = "") -> str:
    """`1 face`, `2 faces`, `2 people` (pass the plural when it is not noun + s)."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


def fresh_key(name: str) -> str:
    """A widget key that changes each time `change` succeeds for `name`: the widget starts empty again.

    Streamlit cannot empty a file uploader from Python; a widget with a new key is a new, empty one.
    """
    return f"{name}-{st.session_state.get(_GENERATION + name, 0)}"


def change(
    spinner: str,
    request: Callable[[], T],
    done: Callable[[T], str],
    *,
    failure: str,
    clears: str = "",
    hints: Mapping[int, str] | None = None,
    photo: Upload | None = None,
) -> None:
    """Run a request that changes the gallery. On success empty the widgets keyed by
    `fresh_key(clears)` (if given) and rerun the page with `done(answer)` at its top; on failure keep them
    (the user corrects the input instead of entering it again) and show the error as `call` does.

    The success is recorded as soon as the API answers, before any Streamlit call: a second click
    during this run interrupts it at its next Streamlit call, and that rerun must find the inputs
    already empty, not send the same photo again.
    """

    def recorded() -> T:
        answer = request()
        st.session_state[_FLASH] = done(answer)
        if clears:
            st.session_state[_GENERATION + clears] = st.session_state.get(_GENERATION + clears, 0) + 1
        return answer

    if call(spinner, recorded, failure, hints, photo) is not None:
        st.rerun()


def show_flash() -> None:
    if message := st.session_state.pop(_FLASH, None):
        st.success(message, icon=":material/check_circle:")


def show_faces(
    image: Upload,
    boxes: Sequence[Sequence[float]],
    keypoints: Sequence[Mapping[str, Sequence[float]]],
    labels: Sequence[str],
    colours: Sequence[Colour] = (),
    width: int | Literal["content", "stretch"] = "content",
) -> None:
    """The photo as the API saw it (EXIF orientation applied), with every face drawn and numbered."""
    try:
        picture = ImageOps.exif_transpose(Image.open(io.BytesIO(image.data)))
    except (OSError, Image.DecompressionBombError) as exc:
        # The API decoded it, but this Pillow cannot: say so instead of failing the page.
        logger.warning("cannot display %s: %s", image.name, exc)
        st.warning(f"{image.name} cannot be displayed here.")
        return
    drawn = draw_faces(picture, boxes, keypoints, labels, colours)
    drawn.thumbnail(DISPLAY_SIZE)
    st.image(drawn, caption=image.name, output_format="JPEG", width=width)


def recognise(image: Upload, threshold: float | None = None, top_k: int | None = None) -> None:
    """Who is in `image` among the chosen collection's people, as the Recognise and Camera pages show
    it: a summary, the photo with each face numbered (registered people in green, strangers in
    orange) and a table row per number; with `top_k` over 1, each face's nearest people too."""
    where = collection()
    result = call(
        "Recognising…",
        lambda: api().recognize(image, where, threshold, top_k),
        failure="Recognition failed",
        photo=image,
    )
    if result is None:
        return
    faces = result["faces"]
    names = [face["matched_user"]["name"] for face in faces if face["matched_user"]]
    st.subheader(f"{counted(len(faces), 'face')}: {len(names)} recognised")
    st.text(f"Recognised: {', '.join(names)}" if names else "Nobody registered is in the picture.")
    st.caption(threshold_sentence(result))
    show_faces(
        image,
        [face["box"] for face in faces],
        [face["keypoints"] for face in faces],
        [_face_label(face) for face in faces],
        [KNOWN_COLOUR if face["matched_user"] else UNKNOWN_COLOUR for face in faces],
    )
    rows = [_face_row(n, face) for n, face in enumerate(faces, start=1)]
    if top_k is not None and top_k > 1:
        for row, face in zip(rows, faces, strict=True):
            row["candidates"] = candidates_text(face["candidates"])
    st.dataframe(rows, hide_index=True)


def candidates_text(candidates: Sequence[Mapping[str, Any]]) -> str:
    """A face's nearest people, nearest first: `Barack Obama (id 3) 0.041 · Joe Biden (id 4) 0.092`."""
    return " · ".join(f"{c['user']['name']} (id {c['user']['id']}) {c['distance']:.3f}" for c in candidates)


def threshold_sentence(result: dict[str, Any]) -> str:
    """Which threshold the search used, and why (the API's threshold_source)."""
    threshold, size = result["threshold"], result["gallery_size"]
    if result["threshold_source"] == "fpir":
        return (
            f"Match threshold {threshold:.4f}: at most {result['fpir_target']:.1%} of strangers are "
            f"named in a gallery of {counted(size, 'person', 'people')} (FACE_MATCH_FPIR)."
        )
    origin = "this page's" if result["threshold_source"] == "request" else "the service's fixed"
    return f"Match threshold {threshold:.4f}: {origin} threshold, for {counted(size, 'person', 'people')}."


def _face_label(face: dict[str, Any]) -> str:
    user = face["matched_user"]
    if face["status"] == "low_quality":
        return LOW_QUALITY
    return f"{user['name']} {face['similarity']:.0%}" if user else UNKNOWN


def _face_row(number: int, face: dict[str, Any]) -> dict[str, Any]:
    user = face["matched_user"]
    distance = face["distance"]
    return {
        "face": number,
        "person": user["name"] if user else (LOW_QUALITY if face["status"] == "low_quality" else UNKNOWN),
        # The probability that the face is its nearest person (calibrated); shown for matches, as a
        # stranger's nearest is someone else by definition.
        "similarity": round(face["similarity"], 3) if user else None,
        "distance": None if distance is None else round(distance, 4),
        "quality": face["quality"] or "good",
        "detection score": round(face["score"], 3),
    }
