"""The FaceGate web UI: `streamlit run src/facegate/ui/app.py` (or `facegate ui`).

Settings come from the environment: `API_URL` (the API to talk to), `APP_TOKEN` (its key) and
`UI_BROWSER_API_URL` (the API's address as the user's browser reaches it, for the Liveness page).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from facegate.ui.client import ApiError
from facegate.ui.widgets import COLLECTION, DEFAULT_COLLECTION, api, call

COLLECTION_HELP = (
    "The gallery every page works on: a person registered in one collection is never recognised in another."
)
NEW_COLLECTION_HELP = "1 to 64 of A-Z, a-z, 0-9, '_', '-' and '.', starting with a letter or digit."
_CREATED = "facegate-created-collection"

VIEWS = Path(__file__).parent / "views"
# A file of the package, not a `:material/...:` name: Streamlit fetches such a favicon from Google's
# font CDN, and the UI must work offline.
FAVICON = Path(__file__).parent / "favicon.svg"


def api_status() -> bool:
    """The API's address and health in the sidebar, so a dead or misconfigured API is obvious;
    whether it answered."""
    client = api()
    st.sidebar.caption(f"API: {client.base_url}")
    try:
        health = client.health()
    except ApiError as exc:
        st.sidebar.error(f"API unavailable: {exc}")
        return False
    st.sidebar.caption(
        f"Status: {health.get('status')} · database {health.get('database')} · "
        f"model {health.get('embedding_model', '?')}"
    )
    return True


def collection_selector(api_up: bool) -> None:
    """The collection every page works on (`widgets.collection()`), and a form to create one."""
    if created := st.session_state.pop(_CREATED, None):
        # A widget's value can be set only before it is drawn in a run: here, on the rerun.
        st.session_state[COLLECTION] = created
    # The first choice: `default`, the collection of clients that name none.
    st.session_state.setdefault(COLLECTION, DEFAULT_COLLECTION)
    with st.sidebar:
        names = [st.session_state[COLLECTION]]
        if api_up:
            try:
                names = [c["name"] for c in api().collections()] or names
            except ApiError as exc:
                # An API older than collections (404), a key without the admin scope (403): the
                # pages still work, on the chosen collection.
                st.caption(f"Collections not listed: {exc}")
        # A choice that is no longer listed (deleted meanwhile) falls back to the first one.
        st.selectbox("Collection", names, key=COLLECTION, help=COLLECTION_HELP)
        with st.expander("New collection"), st.form("new-collection", border=False):
            name = st.text_input("Collection to create", max_chars=64, help=NEW_COLLECTION_HELP).strip()
            if st.form_submit_button("Create") and name:
                create_collection(name)


def create_collection(name: str) -> None:
    """Create the collection and choose it; a refusal (name taken, not a valid name) is shown."""
    created = call(f"Creating {name}…", lambda: api().create_collection(name), failure="Cannot create it")
    if created is not None:
        st.session_state[_CREATED] = created["name"]
        st.rerun()


def main() -> None:
    st.set_page_config(page_title="FaceGate", page_icon=FAVICON, layout="wide")
    pages = [
        st.Page(VIEWS / "detect.py", title="Detect", icon=":material/center_focus_strong:", default=True),
        st.Page(VIEWS / "gallery.py", title="Gallery", icon=":material/group:"),
        st.Page(VIEWS / "recognize.py", title="Recognise", icon=":material/person_search:"),
        st.Page(VIEWS / "activity.py", title="Activity", icon=":material/history:"),
        st.Page(VIEWS / "camera.py", title="Camera", icon=":material/photo_camera:"),
        st.Page(VIEWS / "liveness.py", title="Liveness", icon=":material/face_retouching_natural:"),
    ]
    page = st.navigation(pages)
    collection_selector(api_status())
    page.run()


main()
