"""Recognise page: every face in a photo, labelled with the registered person it matches."""

from __future__ import annotations

import math

import streamlit as st

from facegate.ui.client import ApiError
from facegate.ui.widgets import api, collection, image_input, recognise

# Where the fixed-threshold slider starts when the API cannot say (it is down; the page shows that).
FALLBACK_THRESHOLD = 0.06
# dlib's useful distances lie between 0.02 and 0.1 (its automatic thresholds run from 0.09 for one
# person to 0.036 for 10,000; /verify's best LFW threshold is 0.086), so the slider spans 0–0.2 in
# steps of 0.001, or twice the current threshold for a model with another scale (ArcFace).
SLIDER_TOP = 0.2
SLIDER_STEP = 0.001
MAX_DISTANCE = 2.0  # the API's largest threshold: a cosine distance
MAX_CANDIDATES = 20  # the API's largest top_k


def current_threshold() -> float:
    """The threshold the API uses now for this collection, so a fixed one starts where the API is."""
    try:
        return float(api().stats(collection())["threshold"])
    except (ApiError, KeyError, TypeError, ValueError):
        return FALLBACK_THRESHOLD


def slider_top(default: float) -> float:
    return min(MAX_DISTANCE, max(SLIDER_TOP, math.ceil(2 * default * 100) / 100))


st.title("Recognise faces")
threshold: float | None = None
if st.toggle(
    "Fixed match threshold",
    key="fixed-threshold",
    help="Off: the service chooses the threshold from the gallery's size, so that at most "
    "FACE_MATCH_FPIR (1% by default) of strangers are named however many people are registered. "
    "On: match at the distance you choose.",
):
    default = current_threshold()
    threshold = st.slider(
        "Match threshold (cosine distance)",
        0.0,
        slider_top(default),
        default,
        SLIDER_STEP,
        format="%.3f",
        help=f"A face matches a person whose photo is at most this far from it. Lower is stricter. "
        f"The service uses {default:.3f} for this gallery now; with the default model, 0.086 suits "
        "comparing two photos (/verify).",
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
