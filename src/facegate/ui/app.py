"""The FaceGate web UI: `streamlit run src/facegate/ui/app.py` (or `facegate ui`).

Settings come from the environment: `API_URL` (the API to talk to), `APP_TOKEN` (its key) and
`UI_BROWSER_API_URL` (the API's address as the user's browser reaches it, for the Liveness page).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from facegate.ui.client import ApiError
from facegate.ui.widgets import api

VIEWS = Path(__file__).parent / "views"
# A file of the package, not a `:material/...:` name: Streamlit fetches such a favicon from Google's
# font CDN, and the UI must work offline.
FAVICON = Path(__file__).parent / "favicon.svg"


def api_status() -> None:
    """The API's address and health in the sidebar, so a dead or misconfigured API is obvious."""
    client = api()
    st.sidebar.caption(f"API: {client.base_url}")
    try:
        health = client.health()
    except ApiError as exc:
        st.sidebar.error(f"API unavailable: {exc}")
        return
    st.sidebar.caption(
        f"Status: {health.get('status')} · database {health.get('database')} · "
        f"model {health.get('embedding_model', '?')}"
    )


def main() -> None:
    st.set_page_config(page_title="FaceGate", page_icon=FAVICON, layout="wide")
    pages = [
        st.Page(VIEWS / "detect.py", title="Detect", icon=":material/center_focus_strong:", default=True),
        st.Page(VIEWS / "gallery.py", title="Gallery", icon=":material/group:"),
        st.Page(VIEWS / "recognize.py", title="Recognise", icon=":material/person_search:"),
        st.Page(VIEWS / "camera.py", title="Camera", icon=":material/photo_camera:"),
        st.Page(VIEWS / "liveness.py", title="Liveness", icon=":material/face_retouching_natural:"),
    ]
    page = st.navigation(pages)
    api_status()
    page.run()


main()
