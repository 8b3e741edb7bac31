"""The UI's Activity page (the access log, unknown visitors) and the Gallery's Merge (issue 28), run
by Streamlit's AppTest against a real API (EVENTS=faces) over real HTTP."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import pytest
from streamlit.testing.v1 import AppTest

from facegate.faces import DetectionParams
from facegate.ui.client import ApiClient, ApiError
from tests.data import FACES
from tests.servers import api_server
from tests.test_ui import BIDEN, DEFAULT, OBAMA, TOKEN, api, labelled, photo_of, start_ui, texts

__all__ = ["api", "start_ui"]  # the fixtures, shared with the other UI pages' tests

WRITE_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with api_server(tmp_path_factory.mktemp("ui-activity-api"), TOKEN, EVENTS="faces") as url:
        yield url


def logged(api: ApiClient, count: int) -> list[dict]:
    """The newest events, once the API's background writer has written `count` of them."""
    # The writer is a thread of the API's process: written within moments, later on a busy machine.
    deadline = time.monotonic() + WRITE_TIMEOUT_S
    while time.monotonic() < deadline:
        events = api.events(DEFAULT)
        if len(events) >= count:
            return events
        time.sleep(0.02)
    raise AssertionError(f"fewer than {count} events were written in {WRITE_TIMEOUT_S} s")


def test_activity_lists_decisions_and_enrols_an_unknown_visitor(
    start_ui: Callable[..., AppTest], api_url: str, api: ApiClient
) -> None:
    stranger = photo_of(BIDEN / "fr_biden.jpg")
    for _ in range(2):
        assert api.recognize(stranger, DEFAULT)["status"] in ("no_match", "low_quality")
    logged(api, 2)

    app = start_ui(api_url, page="activity")
    assert "Activity" in texts(app.title)
    table = app.dataframe[0].value
    assert len(table) == 2 and set(table["status"]) == {"no_match"}
    assert all("unknown visitor #" in decision for decision in table["decision"])
    assert any("2 visits since" in text for text in texts(app.markdown))
    assert len(app.image) >= 3  # two faces of the log, one of the visitor

    labelled(app.text_input, "Name").input("Joe Biden")
    labelled(app.button, "Enrol").click()
    app.run()
    assert not app.exception and not app.error, app.error
    assert any(s.startswith("Enrolled unknown visitor #") for s in texts(app.success))
    assert [user["name"] for user in api.users(DEFAULT)] == ["Joe Biden"]
    assert api.recognize(photo_of(BIDEN / "fr_biden2.jpg"), DEFAULT)["matched_user"]["name"] == "Joe Biden"
    assert api.visitors(DEFAULT) == []
    for user in api.users(DEFAULT):  # the other tests start from an empty gallery
        api.delete_user(user["id"], DEFAULT)


def test_gallery_merges_two_records_of_one_person(
    start_ui: Callable[..., AppTest], api_url: str, api: ApiClient
) -> None:
    kept = api.register("Barack Obama", photo_of(OBAMA / "fr_obama.jpg"), DEFAULT)["user_id"]
    other = api.register("B. Obama", photo_of(OBAMA / "fr_obama1.jpg"), DEFAULT, allow_duplicate=True)[
        "user_id"
    ]
    try:
        app = start_ui(api_url, page="gallery")
        app.selectbox(key="manage-user").set_value(kept).run()
        app.selectbox(key=f"merge-{kept}").set_value(other).run()
        labelled(app.button, "Merge").click()
        app.run()
        assert not app.exception and not app.error, app.error
        assert any(s.startswith("Merged B. Obama") and "into Barack Obama" in s for s in texts(app.success))
        people = {user["id"]: user for user in api.users(DEFAULT)}
        assert other not in people and people[kept]["face_count"] == 2
    finally:
        for user_id in (kept, other):
            with contextlib.suppress(ApiError):  # merged away already
                api.delete_user(user_id, DEFAULT)


def test_gallery_registers_the_chosen_face_of_a_group_photo(
    start_ui: Callable[..., AppTest], api_url: str, api: ApiClient
) -> None:
    group = FACES / "groups" / "fr_obama_and_biden.jpg"
    boxes = api.detect(photo_of(group), DetectionParams())["boxes"]
    widest = max(range(len(boxes)), key=lambda i: boxes[i][2] - boxes[i][0])
    app = start_ui(api_url, page="gallery")
    labelled(app.text_input, "Name").input("Chosen face")
    uploader = labelled(app.file_uploader, "Photo with exactly one face")
    uploader.set_value((group.name, group.read_bytes(), "image/jpeg"))
    labelled(app.number_input, "Which face, in a photo of several").set_value(widest)
    labelled(app.button, "Register").click()
    app.run()
    assert not app.exception and not app.error, app.error
    (user,) = [u for u in api.users(DEFAULT) if u["name"] == "Chosen face"]
    try:
        (face,) = api.faces(user["id"], DEFAULT)
        assert face["box_width"] == pytest.approx(boxes[widest][2] - boxes[widest][0], abs=0.5)
    finally:
        api.delete_user(user["id"], DEFAULT)
