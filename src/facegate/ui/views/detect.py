"""Detect page: every face in a photo with its box, score and five keypoints."""

from __future__ import annotations

import time
from typing import Any

import streamlit as st

from facegate.faces import DEFAULT_DETECTION, DetectionParams
from facegate.ui.client import Upload
from facegate.ui.widgets import api, call, counted, image_input, show_faces


def detection_params() -> DetectionParams:
    """The detector's settings, with the API's defaults."""
    defaults = DEFAULT_DETECTION
    size, pnet, rnet, onet = st.columns(4)
    return DetectionParams(
        min_face_size=size.slider(
            "Min face size (px)",
            10,
            200,
            defaults.min_face_size,
            help="Faces smaller than this are not searched for; smaller is slower.",
            key="min-face-size",
        ),
        threshold_pnet=pnet.slider("P-Net threshold", 0.0, 1.0, defaults.threshold_pnet, 0.05, key="pnet"),
        threshold_rnet=rnet.slider("R-Net threshold", 0.0, 1.0, defaults.threshold_rnet, 0.05, key="rnet"),
        threshold_onet=onet.slider("O-Net threshold", 0.0, 1.0, defaults.threshold_onet, 0.05, key="onet"),
    )


def face_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One table row per face: score, box and size in pixels."""
    rows = []
    for number, (box, score) in enumerate(zip(result["boxes"], result["scores"], strict=True), start=1):
        x1, y1, x2, y2 = (round(v) for v in box)
        rows.append(
            {"face": number, "score": round(score, 4), "x1": x1, "y1": y1, "x2": x2, "y2": y2,
             "width": x2 - x1, "height": y2 - y1}
        )  # fmt: skip
    return rows


st.title("Detect faces")
params = detection_params()
image = image_input("detect")
if image is None:
    st.info("Upload a photo to find the faces in it.")
else:
    chosen: Upload = image  # the lambda below needs a name that cannot be None
    started = time.perf_counter()
    result = call("Detecting faces…", lambda: api().detect(chosen, params), failure="Detection failed")
    elapsed_ms = (time.perf_counter() - started) * 1000
    if result is not None:
        count = len(result["boxes"])
        st.subheader(f"{counted(count, 'face')} found")
        st.caption(f"API round trip: {elapsed_ms:.0f} ms")
        show_faces(image, result["boxes"], result["keypoints"], [f"{s:.2f}" for s in result["scores"]])
        if count:
            st.dataframe(face_rows(result), hide_index=True)
