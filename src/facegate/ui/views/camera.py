"""Camera page: a snapshot of the browser's camera with every face labelled with who it is.

Snapshots from `st.camera_input` go to `POST /recognize` over HTTP, as the other pages' photos do:
Streamlit gives a page single snapshots, not a video stream. A client that has a stream (a web
page of its own, a camera gateway) sends its frames to `WS /ws/recognize` instead (see README).
"""

from __future__ import annotations

import streamlit as st

from facegate.ui.client import Upload
from facegate.ui.widgets import api, call, show_faces

UNKNOWN = "?"

st.title("Camera")
shot = st.camera_input("Take a snapshot to see who is in front of the camera", key="camera-shot")
if shot is None:
    st.info("Allow this page to use the camera, then take a snapshot.")
else:
    snapshot = Upload("camera snapshot", shot.getvalue())
    result = call("Recognising…", lambda: api().recognize(snapshot), failure="Recognition failed")
    if result is not None:
        faces = result["faces"]
        # Short labels: a name (or "?") must stay readable over a small face in a webcam picture.
        names = [face["matched_user"]["name"] if face["matched_user"] else UNKNOWN for face in faces]
        show_faces(snapshot, [f["box"] for f in faces], [f["keypoints"] for f in faces], names)
        known = [name for name in names if name != UNKNOWN]
        st.text(f"Recognised: {', '.join(known)}" if known else "Nobody registered is in the picture.")
