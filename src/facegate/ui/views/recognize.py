"""Recognise page: every face in a photo, labelled with the registered person it matches."""

from __future__ import annotations

from typing import Any

import streamlit as st

from facegate.ui.client import ApiError
from facegate.ui.widgets import api, call, counted, image_input, show_faces

UNKNOWN = "unknown"
# Used only when the API cannot say its own default (it is down; the page shows that error anyway).
FALLBACK_THRESHOLD = 0.07


def default_threshold() -> float:
    """The API's calibrated threshold (`FACE_MATCH_THRESHOLD`), so the slider starts where the API would."""
    try:
        return float(api().health()["threshold"])
    except (ApiError, KeyError, TypeError, ValueError):
        return FALLBACK_THRESHOLD


def face_label(face: dict[str, Any]) -> str:
    user = face["matched_user"]
    return f"{user['name']} {face['confidence']:.0%}" if user else UNKNOWN


def face_row(number: int, face: dict[str, Any]) -> dict[str, Any]:
    user = face["matched_user"]
    distance = face["distance"]
    return {
        "face": number,
        "person": user["name"] if user else UNKNOWN,
        "confidence": round(face["confidence"], 3),
        "distance": None if distance is None else round(distance, 4),
        "detection score": round(face["score"], 3),
    }


st.title("Recognise faces")
threshold = st.slider(
    "Match threshold (cosine distance)",
    0.0,
    1.0,
    default_threshold(),
    0.005,
    format="%.3f",
    help="A face matches a person whose photo is at most this far from it. Lower is stricter.",
)
image = image_input("recognize")
if image is None:
    st.info("Upload a photo to recognise the people in it.")
else:
    result = call("Recognising…", lambda: api().recognize(image, threshold), failure="Recognition failed")
    if result is not None:
        faces = result["faces"]
        names = [face["matched_user"]["name"] for face in faces if face["matched_user"]]
        st.subheader(f"{counted(len(faces), 'face')}: {len(names)} recognised")
        if names:
            st.text("Recognised: " + ", ".join(names))  # plain text: a name is not markdown
        show_faces(
            image,
            [face["box"] for face in faces],
            [face["keypoints"] for face in faces],
            [face_label(face) for face in faces],
        )
        st.dataframe([face_row(n, face) for n, face in enumerate(faces, start=1)], hide_index=True)
