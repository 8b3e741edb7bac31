"""Recognise page: every face in a photo, labelled with the registered person it matches."""

from __future__ import annotations

import math

import streamlit as st

from facegate.ui.client import ApiError
from facegate.ui.widgets import api, collection, image_input, recognise

# Every model has its own scale of distances, so the slider spans 0 to twice the larger of the
# API's current search threshold and its one-to-one (/verify) threshold, in steps of 0.001; when the
# API cannot say (it is down; the page shows that), 0 to 2, every possible cosine distance.
SLIDER_STEP = 0.001
MAX_DISTANCE = 2.0  # the API's largest threshold: a cosine distance
MAX_CANDIDATES = 20  # the API's largest top_k


def api_thresholds() -> tuple[float, float] | None:
    """The search threshold the API uses now for this collection and its one-to-one threshold."""
    try:
        stats = api().stats(collection())
        return float(stats["threshold"]), float(stats["verify_threshold"])
    except (ApiError, KeyError, TypeError, ValueError):
        return None


def slider_top(search: float, verify: float) -> float:
    return min(MAX_DISTANCE, math.ceil(2 * max(search, verify) * 100) / 100)


st.title("Recognise faces")
threshold: float | None = None
if st.toggle(
    "Fixed match threshold",
    key="fixed-threshold",
    help="Off: the service chooses the threshold from the gallery's size, so that at most "
    "FACE_MATCH_FPIR (1% by default) of strangers are named however many people are registered. "
    "On: match at the distance you choose.",
):
    known = api_thresholds()
    default, verify = known or (MAX_DISTANCE / 2, MAX_DISTANCE / 2)
    threshold = st.slider(
        "Match threshold (cosine distance)",
        0.0,
        slider_top(default, verify),
        default,
        SLIDER_STEP,
        format="%.3f",
        help="A face matches a person whose photo is at most this far from it. Lower is stricter. "
        + (
            f"The service uses {default:.3f} for this gallery now; {verify:.3f} suits comparing two "
            "photos (/verify)."
            if known
            else ""
        ),
    )
top_k = st.number_input(
    "Candidates per face",
    1,
    MAX_CANDIDATES,
    1,
    key="top-k",
    help="Over 1: the table lists each face's nearest people in the collection, nearest first, with "
    "their distances, for a person to review. Only the green label is a match.",
)
image = image_input("recognize")
if image is None:
    st.info(f"Upload a photo to recognise the people of the collection {collection()} in it.")
else:
    recognise(image, threshold, int(top_k))
