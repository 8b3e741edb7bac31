"""Camera page: a snapshot of the browser's camera, shown as the Recognise page shows a photo.

Snapshots from `st.camera_input` go to `POST /recognize` over HTTP, as the other pages' photos do:
Streamlit gives a page single snapshots, not a video stream. A client that has a stream (a web
page of its own, a camera gateway) sends its frames to `WS /ws/recognize` instead (see README).
"""

from __future__ import annotations

import streamlit as st

from facegate.ui.client import Upload
from facegate.ui.widgets import recognise

st.title("Camera")
shot = st.camera_input("Take a snapshot to see who is in front of the camera", key="camera-shot")
if shot is None:
    st.info("Allow this page to use the camera, then take a snapshot.")
else:
    recognise(Upload("camera snapshot", shot.getvalue()))
