"""Liveness page: a live check with the browser's camera, over `WS /ws/liveness`.

Streamlit cannot stream a camera from Python, so the camera, the socket and the display run in the
browser, in a small HTML component (`ui/liveness.html`). The browser never gets this UI's API key
(it may be the admin key): on Start the UI asks the API for a ticket that opens one liveness socket
within a minute, and hands only that to the component. Each Start draws a new component with a new
ticket, so a new session.
"""

from __future__ import annotations

import json
from pathlib import Path

import streamlit as st

from facegate.config import get_settings
from facegate.ui.widgets import api, call, collection

COMPONENT = Path(__file__).parents[1] / "liveness.html"
# Streamlit serves its frontend's files under `static/` beside the pages; the file names carry a hash
# that changes with Streamlit's version, so the installed one is looked up.
STREAMLIT_MEDIA = Path(st.__file__).parent / "static" / "static" / "media"
TEXT_FONT = "SourceSansVF-Upright*.woff2"
FRAMES_PER_SECOND = 6  # more only queues at the server: a frame takes a few hundred ms on a CPU
CONFIG_SLOT = "__CONFIG__"


def page_font() -> str:
    """Streamlit's text font as a URL relative to the page ("" if this Streamlit has none by that name)."""
    fonts = sorted(STREAMLIT_MEDIA.glob(TEXT_FONT))
    return f"static/media/{fonts[0].name}" if fonts else ""


def component(ticket: str, api_url: str, collection: str) -> str:
    """The component's HTML with its settings: the API's address as the browser sees it, the ticket,
    the collection whose people the verdict names, the UI's font."""
    settings = json.dumps(
        {
            "api": api_url,
            "ticket": ticket,
            "collection": collection,
            "fps": FRAMES_PER_SECOND,
            "font": page_font(),
        }
    )
    # Inside a <script> element: an escaped "<" keeps any value from closing the element early.
    return COMPONENT.read_text().replace(CONFIG_SLOT, settings.replace("<", "\\u003c"))


st.title("Liveness")
st.markdown(
    "Press **Start**, allow the camera, and follow the instruction shown in large letters: two or "
    "three challenges (blink, turn your head, open your mouth) in a random order, before the time "
    "runs out. The verdict says whether a live person was in front of the camera and, if so, who."
)
st.caption(
    "Browsers give the camera only to secure pages: open the UI over https://, or on "
    "http://localhost or http://127.0.0.1. Each session is used once; press Start again for another."
)
if st.button("Start", type="primary", icon=":material/play_arrow:", key="liveness-start"):
    ticket = call("Opening a session…", api().liveness_ticket, failure="Cannot start a liveness session")
    if ticket is not None:
        st.iframe(
            component(ticket["ticket"], get_settings().browser_api_url(), collection()),
            height="content",
            alt="Liveness check",
        )
else:
    st.info("Press Start to begin a liveness check with this computer's camera.")
