"""Recognise page: every face in a photo, labelled with the registered person it matches."""

from __future__ import annotations

import math

import streamlit as st

from facegate.ui.client import ApiError
from facegate.ui.widgets import api, image_input, recognise

# Used only when the API cannot say its own default (it is down; the page shows that error anyway).
FALLBACK_THRESHOLD = 0.06
# dlib's useful distances lie between 0.03 and 0.1 (the default FACE_MATCH_THRESHOLD is 0.06, and
# /verify's best LFW threshold 0.086), so the slider spans 0–0.2 in steps of 0.001. It reaches three
# times the configured threshold when that is larger, for a model with another scale (ArcFace).
SLIDER_TOP = 0.2
SLIDER_STEP = 0.001
MAX_DISTANCE = 2.0  # the API's largest threshold: a cosine distance


def default_threshold() -> float:
    """The API's calibrated threshold (`FACE_MATCH_THRESHOLD`), so the slider starts where the API would."""
    try:
        return float(api().health()["threshold"])
    except (ApiError, KeyError, TypeError, ValueError):
        return FALLBACK_THRESHOLD


def slider_top(default: float) -> float:
    return min(MAX_DISTANCE, max(SLIDER_TOP, math.ceil(3 * default * 100) / 100))


st.title("Recognise faces")
default = default_threshold()
threshold = st.slider(
    "Match threshold (cosine distance)",
    0.0,
    slider_top(default),
    default,
    SLIDER_STEP,
    format="%.3f",
    help=f"A face matches a person whose photo is at most this far from it. Lower is stricter. The "
    f"API's default is {default:.3f}; with the default model, 0.086 suits comparing two photos (/verify).",
)
image = image_input("recognize")
if image is None:
    st.info("Upload a photo to recognise the people in it.")
else:
    recognise(image, threshold)
