"""The Streamlit UI's pages, run by Streamlit's AppTest against the real API over real HTTP."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from facegate.api.tickets import LIVENESS_GRANT, TicketSigner
from facegate.client import FaceGateClient
from facegate.config import Settings, get_settings
from facegate.ui.client import ApiClient, ApiError, Upload, error_message
from tests.data import FACES
from tests.servers import UI_SCRIPT, api_server, free_port
from tests.support import unique

TOKEN = "ui-test-" + uuid.uuid4().hex
TWO_PEOPLE = FACES / "groups" / "fr_two_people.jpg"  # Obama (left, smaller) and Biden (right)
OBAMA = FACES / "portraits" / "Barack_Obama"
BIDEN = FACES / "portraits" / "Joe_Biden"
NO_FACE = FACES / "noface" / "skimage_coffee.png"
DEFAULT = "default"
# AppTest runs the page in this process; detection of a large photo on a busy CPU takes seconds.
RUN_TIMEOUT = 120
W = TypeVar("W")


@pytest.fixture(scope="module")
def api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with api_server(tmp_path_factory.mktemp("ui-api"), TOKEN) as url:
        yield url


@pytest.fixture
def api(api_url: str) -> Iterator[ApiClient]:
    client = ApiClient(api_url, TOKEN)
    yield client
    client.close()


@pytest.fixture
def start_ui(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Callable[..., AppTest]]:
    """Starts the UI configured by the environment, as `facegate ui` would be."""

    def start(api_url: str, token: str = TOKEN, page: str = "", **environment: str) -> AppTest:
        for name in Settings.model_fields:
            monkeypatch.delenv(name.upper(), raising=False)
        for name, value in {**environment, "API_URL": api_url, "APP_TOKEN": token}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("FACEGATE_DATA_DIR", str(tmp_path))
        monkeypatch.chdir(tmp_path)  # no developer's .env
        # The settings and the UI's client are cached per process: start from the new environment.
        get_settings.cache_clear()
        st.cache_resource.clear()
        app = AppTest.from_file(str(UI_SCRIPT), default_timeout=RUN_TIMEOUT).run()
        if page:
            app.switch_page(f"views/{page}.py").run()
        assert not app.exception, app.exception
        return app

    yield start
    get_settings.cache_clear()
    st.cache_resource.clear()


def upload(app: AppTest, path: Path, key: str) -> AppTest:
    app.file_uploader(key=key).set_value((path.name, path.read_bytes(), "image/jpeg"))
    return app.run()


def texts(elements: object) -> list[str]:
    return [element.value for element in elements]  # type: ignore[attr-defined]


def photo_of(path: Path) -> Upload:
    return Upload(path.name, path.read_bytes())


@contextmanager
def registered(api: ApiClient, photo: Path, name: str, collection: str = DEFAULT) -> Iterator[str]:
    """`name` registered with `photo` through the API for the duration of the block."""
    user = api.register(name, photo_of(photo), collection)
    try:
        yield name
    finally:
        api.delete_user(user["user_id"], collection)


def labelled(widgets: Iterable[W], label: str) -> W:
    """The one widget with this label (the Gallery's keys change after each success)."""
    [widget] = [w for w in widgets if w.label == label]  # type: ignore[attr-defined]
    return widget


def choose(app: AppTest, label: str, photo: Path | None) -> None:
    uploader = labelled(app.file_uploader, label)
    uploader.set_value(None if photo is None else (photo.name, photo.read_bytes(), "image/jpeg"))


def register_in_ui(app: AppTest, name: str, photo: Path | None) -> AppTest:
    labelled(app.text_input, "Name").input(name)
    choose(app, "Photo with exactly one face", photo)
    labelled(app.button, "Register").click()
    return app.run()


def faces_of(api: ApiClient, user_id: int, collection: str = DEFAULT) -> int:
    return next(user["face_count"] for user in api.users(collection) if user["id"] == user_id)


# --- Detect --------------------------------------------------------------------------------------


def test_detect_page_draws_and_lists_every_face(start_ui: Callable[..., AppTest], api_url: str) -> None:
    app = start_ui(api_url)
    assert "Detect faces" in texts(app.title)
    assert "API: " + api_url in texts(app.sidebar.caption)

    upload(app, TWO_PEOPLE, "detect-upload")

    assert not app.exception and not app.error
    assert "2 faces found" in texts(app.subheader)
    assert any(caption.startswith("API round trip: ") for caption in texts(app.caption))
    [image] = app.image
    assert image.captions == [TWO_PEOPLE.name]
    table = app.dataframe[0].value
    assert len(table) == 2 and table["score"].min() > 0.9


@pytest.mark.parametrize(("slider", "value"), [("min-face-size", 100), ("onet", 0.9)])
def test_detect_page_sends_the_slider_settings(
    start_ui: Callable[..., AppTest], api_url: str, slider: str, value: float
) -> None:
    # With the defaults, MTCNN also reports a small, less certain "face" in this photo's background.
    app = upload(start_ui(api_url), OBAMA / "fr_obama.jpg", "detect-upload")
    assert "2 faces found" in texts(app.subheader)
    app.slider(key=slider).set_value(value).run()
    assert "1 face found" in texts(app.subheader)
    assert len(app.dataframe[0].value) == 1


def test_detect_page_shows_api_errors_as_messages(start_ui: Callable[..., AppTest], api_url: str) -> None:
    app = start_ui(api_url)
    app.file_uploader(key="detect-upload").set_value(("notes.png", b"not an image at all", "image/png"))
    app.run()
    assert not app.exception
    [error] = texts(app.error)
    assert error.startswith("Detection failed: ") and "image" in error


def test_detect_page_offers_sample_photos(
    start_ui: Callable[..., AppTest], api_url: str, tmp_path: Path
) -> None:
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / TWO_PEOPLE.name).write_bytes(TWO_PEOPLE.read_bytes())
    app = start_ui(api_url)
    app.selectbox(key="detect-sample").select(TWO_PEOPLE.name).run()
    assert "2 faces found" in texts(app.subheader)


# --- Gallery -------------------------------------------------------------------------------------


def test_gallery_register_add_photo_delete(
    start_ui: Callable[..., AppTest], api_url: str, api: ApiClient
) -> None:
    name = unique("Barack Obama")
    app = start_ui(api_url, page="gallery")
    register_in_ui(app, name, OBAMA / "fr_obama1.jpg")
    assert not app.exception and not app.error
    assert any(s.startswith(f"Registered {name} (id ") for s in texts(app.success))
    # The form starts empty again for the next person.
    assert labelled(app.text_input, "Name").value == ""
    rows = app.dataframe[0].value
    assert rows.loc[rows["name"] == name, "photos"].tolist() == [1]
    user_id = int(rows.loc[rows["name"] == name, "id"].iloc[0])

    app.selectbox(key="manage-user").select(user_id).run()
    choose(app, f"Another photo of {name}", OBAMA / "fr_obama2.jpg")
    app.run()
    labelled(app.button, "Add photo").click().run()
    assert f"{name} now has 2 photos." in texts(app.success)
    rows = app.dataframe[0].value
    assert rows.loc[rows["name"] == name, "photos"].tolist() == [2]

    with registered(api, BIDEN / "fr_biden.jpg", unique("Joe Biden")):  # somebody else stays
        app.checkbox(key=f"confirm-delete-{user_id}").check().run()
        labelled(app.button, "Delete").click().run()
        assert f"Deleted {name}." in texts(app.success)
        assert name not in app.dataframe[0].value["name"].tolist()
        # Nobody is chosen now: the choice does not jump to another person.
        assert app.selectbox(key="manage-user").value is None
        assert not [button for button in app.button if button.label in ("Add photo", "Delete")]


def test_gallery_photo_chosen_for_one_person_is_not_added_to_another(
    start_ui: Callable[..., AppTest], api_url: str, api: ApiClient
) -> None:
    """Issue 14, point 2: choose a photo of A, switch to B, press Add photo."""
    with (
        registered(api, OBAMA / "fr_obama1.jpg", unique("Barack Obama")) as obama,
        registered(api, BIDEN / "fr_biden.jpg", unique("Joe Biden")) as joe,
    ):
        ids = {user["name"]: user["id"] for user in api.users(DEFAULT)}
        app = start_ui(api_url, page="gallery")
        app.selectbox(key="manage-user").select(ids[obama]).run()
        choose(app, f"Another photo of {obama}", OBAMA / "fr_obama2.jpg")
        app.run()
        assert not labelled(app.button, "Add photo").disabled

        app.selectbox(key="manage-user").select(ids[joe]).run()
        # Joe's own uploader, empty: there is nothing to add to him.
        assert labelled(app.button, "Add photo").disabled
        assert not [u for u in app.file_uploader if u.label == f"Another photo of {obama}"]
        assert faces_of(api, ids[joe]) == 1 and faces_of(api, ids[obama]) == 1


def test_gallery_add_photo_empties_the_uploader_after_success(
    start_ui: Callable[..., AppTest], api_url: str, api: ApiClient
) -> None:
    """A second click after a successful add has no photo to send: no duplicate."""
    with registered(api, OBAMA / "fr_obama1.jpg", unique("Barack Obama")) as name:
        [user_id] = [user["id"] for user in api.users(DEFAULT) if user["name"] == name]
        app = start_ui(api_url, page="gallery")
        app.selectbox(key="manage-user").select(user_id).run()
        choose(app, f"Another photo of {name}", OBAMA / "fr_obama2.jpg")
        app.run()
        labelled(app.button, "Add photo").click().run()
        assert f"{name} now has 2 photos." in texts(app.success)
        add = labelled(app.button, "Add photo")
        assert add.disabled  # a browser user cannot click it
        app.run()
        assert faces_of(api, user_id) == 2


def test_gallery_refused_photo_keeps_the_form_and_shows_the_photo(
    start_ui: Callable[..., AppTest], api_url: str, api: ApiClient
) -> None:
    name = unique("Nobody")
    app = start_ui(api_url, page="gallery")
    register_in_ui(app, name, NO_FACE)
    [error] = texts(app.error)
    assert error.startswith(f"Could not register {name}: ")
    [image] = app.image  # the refused photo, so the user sees what was wrong with it
    assert image.captions == [NO_FACE.name]
    # Name and photo are kept: a second photo is the only correction needed.
    assert labelled(app.text_input, "Name").value == name
    choose(app, "Photo with exactly one face", OBAMA / "fr_obama1.jpg")
    labelled(app.button, "Register").click().run()
    assert any(s.startswith(f"Registered {name} (id ") for s in texts(app.success))
    assert not app.image  # the refusal is over
    [user_id] = [user["id"] for user in api.users(DEFAULT) if user["name"] == name]
    api.delete_user(user_id, DEFAULT)


@pytest.mark.parametrize(
    ("name", "photo", "expected"),
    [("Somebody", None, "Choose a photo."), ("", OBAMA / "fr_obama1.jpg", "Enter a name."),
     ("  ", None, "Enter a name and choose a photo.")],
    ids=["no-photo", "no-name", "neither"],
)  # fmt: skip
def test_gallery_says_what_the_form_is_missing(
    start_ui: Callable[..., AppTest], api_url: str, name: str, photo: Path | None, expected: str
) -> None:
    app = start_ui(api_url, page="gallery")
    register_in_ui(app, name, photo)
    assert texts(app.warning) == [expected]
    assert not app.success and not app.error


@pytest.mark.parametrize(
    ("photo", "expected"),
    [(NO_FACE, "found no face"), (TWO_PEOPLE, "found 2 faces")],
    ids=["no-face", "two-faces"],
)
def test_gallery_explains_a_refused_photo(
    start_ui: Callable[..., AppTest], api_url: str, photo: Path, expected: str
) -> None:
    name = unique("Nobody")
    app = start_ui(api_url, page="gallery")
    register_in_ui(app, name, photo)
    assert not app.exception
    [error] = texts(app.error)
    assert error.startswith(f"Could not register {name}: ")
    assert expected in error and "exactly one face is needed" in error


def test_gallery_explains_a_duplicate_name(
    start_ui: Callable[..., AppTest], api_url: str, api: ApiClient
) -> None:
    with registered(api, BIDEN / "fr_biden2.jpg", unique("Joe Biden")) as name:
        app = start_ui(api_url, page="gallery")
        register_in_ui(app, name, BIDEN / "fr_biden.jpg")
    [error] = texts(app.error)
    assert "already registered" in error and "Pick another name" in error


# --- Collections and single photos ---------------------------------------------------------------


@pytest.fixture
def site(api_url: str) -> Iterator[str]:
    """A new, empty collection for the test, deleted with its people after it."""
    name = f"site-{uuid.uuid4().hex[:8]}"
    with FaceGateClient(api_url, TOKEN) as client:
        client.create_collection(name)
        yield name
        client.delete_collection(name)


def in_collection(app: AppTest, name: str) -> AppTest:
    """The sidebar's collection chosen, as a user does."""
    app.selectbox(key="collection").select(name).run()
    assert not app.exception, app.exception
    return app


def manage_person(app: AppTest, api: ApiClient, name: str, collection: str) -> int:
    [user_id] = [user["id"] for user in api.users(collection) if user["name"] == name]
    app.selectbox(key="manage-user").select(user_id).run()
    return user_id


def test_collection_selector_lists_creates_and_is_used_by_the_gallery(
    start_ui: Callable[..., AppTest], api_url: str, api: ApiClient, site: str
) -> None:
    app = start_ui(api_url, page="gallery")
    selector = app.selectbox(key="collection")
    assert selector.value == DEFAULT and {DEFAULT, site} <= set(selector.options)

    created = f"site-{uuid.uuid4().hex[:8]}"
    labelled(app.text_input, "Collection to create").input(created)
    labelled(app.button, "Create").click().run()
    try:
        assert not app.exception and not app.error
        assert app.selectbox(key="collection").value == created  # chosen at once
        assert f"Collection {created} (choose another in the sidebar)" in texts(app.caption)
        name = unique("Barack Obama")
        register_in_ui(app, name, OBAMA / "fr_obama1.jpg")
        assert any(s.startswith(f"Registered {name} (id ") for s in texts(app.success))
        assert [user["name"] for user in api.users(created)] == [name]
        assert name not in [user["name"] for user in api.users(DEFAULT)]

        in_collection(app, site)  # another collection: its own (empty) gallery
        assert "0 registered people" in texts(app.subheader)
        labelled(app.text_input, "Collection to create").input(created)
        labelled(app.button, "Create").click().run()
        assert any(e.startswith("Cannot create it: ") and created in e for e in texts(app.error))
        assert app.selectbox(key="collection").value == site
    finally:
        with FaceGateClient(api_url, TOKEN) as client:
            client.delete_collection(created)


def test_gallery_lists_and_deletes_single_photos(
    start_ui: Callable[..., AppTest], api_url: str, api: ApiClient, site: str
) -> None:
    name = unique("Barack Obama")
    user_id = api.register(name, photo_of(OBAMA / "fr_obama1.jpg"), site)["user_id"]
    api.add_face(user_id, photo_of(OBAMA / "fr_obama2.jpg"), site)
    first, second = (face["id"] for face in api.faces(user_id, site))
    app = in_collection(start_ui(api_url, page="gallery"), site)
    manage_person(app, api, name, site)
    assert f"**2 stored photos of {name}**" in texts(app.markdown)
    assert {f"Photo {first}", f"Photo {second}"} <= set(texts(app.text))
    assert any(re.fullmatch(r"face \d+ × \d+ px", text) for text in texts(app.text))

    app.button(key=f"delete-face-{first}").click().run()
    assert f"Deleted photo {first} of {name}; 1 photo left." in texts(app.success)
    assert [face["id"] for face in api.faces(user_id, site)] == [second]
    assert f"Photo {first}" not in texts(app.text)

    app.button(key=f"delete-face-{second}").click().run()  # the last one: refused
    [error] = texts(app.error)
    assert error.startswith(f"Could not delete photo {second}: ") and "delete the user" in error
    assert [face["id"] for face in api.faces(user_id, site)] == [second]


def test_gallery_photo_of_someone_else_is_refused_then_added_anyway(
    start_ui: Callable[..., AppTest], api_url: str, api: ApiClient, site: str
) -> None:
    """The photo of Kit Harington added to Rose Leslie: refused with the API's message; added only
    once the user ticks "Add anyway"."""
    rose = unique("Rose Leslie")
    with registered(api, FACES / "portraits" / "Rose_Leslie" / "fr_knn_train_img1.jpg", rose, site):
        app = in_collection(start_ui(api_url, page="gallery"), site)
        user_id = manage_person(app, api, rose, site)
        anyway = f"Add anyway: it is {rose} (a much older photo, say)"
        assert not [box for box in app.checkbox if box.label == anyway]  # never offered by default
        choose(app, f"Another photo of {rose}", FACES / "portraits" / "Kit_Harington" / "fr_john1.jpeg")
        app.run()
        labelled(app.button, "Add photo").click().run()
        [error] = texts(app.error)
        assert error.startswith(f"Could not add the photo of {rose}: ")
        assert faces_of(api, user_id, site) == 1  # nothing stored

        labelled(app.checkbox, anyway).check().run()
        labelled(app.button, "Add photo").click().run()
        assert f"{rose} now has 2 photos." in texts(app.success)
        assert faces_of(api, user_id, site) == 2
        # The next photo starts without the override.
        assert not [box for box in app.checkbox if box.label == anyway]


def test_gallery_register_of_a_registered_face_names_its_owner_then_registers_anyway(
    start_ui: Callable[..., AppTest], api_url: str, api: ApiClient, site: str
) -> None:
    with registered(api, OBAMA / "fr_obama1.jpg", unique("Barack Obama"), site) as obama:
        [owner] = [user["id"] for user in api.users(site)]
        app = in_collection(start_ui(api_url, page="gallery"), site)
        anyway = "Register anyway: a different person who looks alike (a twin, say)"
        assert not [box for box in app.checkbox if box.label == anyway]  # never offered by default
        other = unique("Somebody Else")
        register_in_ui(app, other, OBAMA / "fr_obama2.jpg")
        [error] = texts(app.error)
        assert error.startswith(f"Could not register {other}: ") and f"(user {owner})" in error
        assert [user["name"] for user in api.users(site)] == [obama]

        labelled(app.checkbox, anyway).check()
        labelled(app.button, "Register").click().run()  # the form keeps the name and the photo
        assert any(s.startswith(f"Registered {other} (id ") for s in texts(app.success))
        assert sorted(user["name"] for user in api.users(site)) == sorted([obama, other])
        assert not [box for box in app.checkbox if box.label == anyway]


def test_gallery_renames_a_person(
    start_ui: Callable[..., AppTest], api_url: str, api: ApiClient, site: str
) -> None:
    with registered(api, BIDEN / "fr_biden.jpg", unique("Joe Bidden"), site) as name:
        app = in_collection(start_ui(api_url, page="gallery"), site)
        user_id = manage_person(app, api, name, site)
        new_name = name.replace("Bidden", "Biden")
        app.button(key=f"rename-{user_id}-button").click().run()
        assert texts(app.warning) == [f"Type the new name of {name} first."]
        app.text_input(key=f"rename-{user_id}").input(new_name)
        app.button(key=f"rename-{user_id}-button").click().run()
        assert f"Renamed {name} to {new_name}." in texts(app.success)
        assert app.dataframe[0].value["name"].tolist() == [new_name]
        assert [user["name"] for user in api.users(site)] == [new_name]


# --- Recognise -----------------------------------------------------------------------------------


def test_recognise_labels_every_face(start_ui: Callable[..., AppTest], api_url: str, api: ApiClient) -> None:
    with registered(api, OBAMA / "fr_obama1.jpg", unique("Barack Obama")) as name:
        app = start_ui(api_url, page="recognize")
        assert not app.slider  # by default the service chooses the threshold for the gallery's size
        upload(app, TWO_PEOPLE, "recognize-upload")
    assert not app.exception and not app.error
    assert "2 faces: 1 recognised" in texts(app.subheader)
    assert f"Recognised: {name}" in texts(app.text)
    assert any("of strangers are named" in caption for caption in texts(app.caption))
    table = app.dataframe[0].value
    # Largest first: Biden on the right (nobody registered him), then Obama.
    assert table["person"].tolist() == ["unknown", name]
    assert table["similarity"].tolist()[1] > 0.9


def test_recognise_in_the_chosen_collection_with_candidates(
    start_ui: Callable[..., AppTest], api_url: str, api: ApiClient, site: str
) -> None:
    with (
        registered(api, OBAMA / "fr_obama1.jpg", unique("Barack Obama"), site) as obama,
        registered(api, BIDEN / "fr_biden.jpg", unique("Joe Biden"), site) as biden,
    ):
        app = start_ui(api_url, page="recognize")
        upload(app, TWO_PEOPLE, "recognize-upload")
        assert "2 faces: 0 recognised" in texts(app.subheader)  # `default` knows neither
        in_collection(app, site)
        app.number_input(key="top-k").set_value(2).run()
    assert not app.exception and not app.error
    assert "2 faces: 2 recognised" in texts(app.subheader)
    table = app.dataframe[0].value
    assert table["person"].tolist() == [biden, obama]
    biden_first, obama_first = table["candidates"].tolist()
    assert biden_first.startswith(f"{biden} (id ") and f" · {obama} (id " in biden_first
    assert obama_first.startswith(f"{obama} (id ") and f" · {biden} (id " in obama_first


def test_recognise_threshold_zero_matches_nobody(
    start_ui: Callable[..., AppTest], api_url: str, api: ApiClient
) -> None:
    with registered(api, OBAMA / "fr_obama1.jpg", unique("Barack Obama")):
        app = start_ui(api_url, page="recognize")
        app.toggle(key="fixed-threshold").set_value(True).run()
        assert app.slider[0].value == pytest.approx(api.stats(DEFAULT)["threshold"])
        app.slider[0].set_value(0.0)
        upload(app, OBAMA / "fr_obama3.jpg", "recognize-upload")
    assert "1 face: 0 recognised" in texts(app.subheader)
    assert app.dataframe[0].value["person"].tolist() == ["unknown"]


def test_recognise_slider_spans_the_useful_distances(
    start_ui: Callable[..., AppTest], api_url: str, api: ApiClient
) -> None:
    """0 to twice the model's larger threshold in steps of 0.001: the service's search threshold and
    /verify's can both be chosen, whatever the model's scale."""
    with registered(api, OBAMA / "fr_obama1.jpg", unique("Barack Obama")) as name:
        stats = api.stats(DEFAULT)
        verify = stats["verify_threshold"]
        app = start_ui(api_url, page="recognize")
        app.toggle(key="fixed-threshold").set_value(True).run()
        [slider] = app.slider
        assert (slider.min, slider.step) == (0.0, pytest.approx(0.001))
        assert max(stats["threshold"], verify) < slider.max <= 2 * max(stats["threshold"], verify) + 0.01
        slider.set_value(round(verify, 3))
        upload(app, OBAMA / "fr_obama3.jpg", "recognize-upload")
    assert not app.exception and not app.error
    assert app.slider[0].value == pytest.approx(round(verify, 3))
    [row] = app.dataframe[0].value.to_dict("records")
    assert row["person"] == (name if row["distance"] <= round(verify, 3) else "unknown")


def test_recognise_shows_a_photo_without_a_face_with_the_message(
    start_ui: Callable[..., AppTest], api_url: str
) -> None:
    app = upload(start_ui(api_url, page="recognize"), NO_FACE, "recognize-upload")
    assert not app.exception
    [error] = texts(app.error)
    assert error.startswith("Recognition failed: ") and "no face" in error
    [image] = app.image
    assert image.captions == [NO_FACE.name]


# --- Camera --------------------------------------------------------------------------------------


def test_camera_snapshot_is_labelled_with_names(
    start_ui: Callable[..., AppTest], api_url: str, api: ApiClient
) -> None:
    with registered(api, OBAMA / "fr_obama1.jpg", unique("Barack Obama")) as name:
        app = start_ui(api_url, page="camera")
        assert "Allow this page to use the camera" in texts(app.info)[0]
        app.camera_input(key="camera-shot").set_value(("snapshot.jpg", TWO_PEOPLE.read_bytes(), "image/jpeg"))
        app.run()
    assert not app.exception and not app.error
    # What the Recognise page shows: the summary, the photo, a numbered row per face.
    assert "2 faces: 1 recognised" in texts(app.subheader)
    assert f"Recognised: {name}" in texts(app.text)
    [image] = app.image  # the snapshot with the faces drawn
    assert image.captions == ["camera snapshot"]
    table = app.dataframe[0].value
    assert table["face"].tolist() == [1, 2] and table["person"].tolist() == ["unknown", name]


# --- Liveness ------------------------------------------------------------------------------------


def component_config(html: str) -> dict[str, Any]:
    """The settings views/liveness.py wrote into the component's HTML."""
    found = re.search(r'<script type="application/json" id="config">(.*?)</script>', html)
    assert found is not None
    return dict(json.loads(found[1]))


def test_liveness_page_offers_start_and_hands_the_browser_a_ticket_not_the_key(
    start_ui: Callable[..., AppTest], api_url: str
) -> None:
    app = start_ui(api_url, page="liveness", UI_BROWSER_API_URL="/api")
    assert "Liveness" in texts(app.title)
    assert "Press Start" in texts(app.info)[0]
    assert not app.get("iframe")  # no camera, no socket, until Start
    app.button(key="liveness-start").click().run()
    assert not app.exception and not app.error
    [frame] = app.get("iframe")
    html = frame.proto.srcdoc
    config = component_config(html)
    assert config["api"] == "/api"
    assert config["collection"] == DEFAULT  # the sidebar's choice, for the socket's ?collection=
    assert re.fullmatch(r"static/media/SourceSans\S*\.woff2", config["font"])  # Streamlit's own font
    assert TOKEN not in html  # the UI's key stays on the server
    ticket = TicketSigner(TOKEN).verify(config["ticket"], LIVENESS_GRANT)  # the API's own ticket
    assert ticket == "admin"


def test_liveness_page_hands_the_browser_the_chosen_collection(
    start_ui: Callable[..., AppTest], api_url: str, site: str
) -> None:
    app = in_collection(start_ui(api_url, page="liveness"), site)
    app.button(key="liveness-start").click().run()
    [frame] = app.get("iframe")
    assert component_config(frame.proto.srcdoc)["collection"] == site  # the verdict names its people only


def test_liveness_page_reports_a_refused_ticket(start_ui: Callable[..., AppTest], api_url: str) -> None:
    app = start_ui(api_url, token="wrong-key", page="liveness")
    app.button(key="liveness-start").click().run()
    assert not app.exception and not app.get("iframe")
    assert any(
        e.startswith("Cannot start a liveness session: missing or wrong API key") for e in texts(app.error)
    )


# --- Failures of the API itself ------------------------------------------------------------------


def test_unreachable_api_is_a_message_not_a_traceback(start_ui: Callable[..., AppTest]) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    app = start_ui(dead)
    assert any(f"cannot reach the API at {dead}" in e for e in texts(app.sidebar.error))
    upload(app, TWO_PEOPLE, "detect-upload")
    assert not app.exception
    assert any(e.startswith("Detection failed: cannot reach the API") for e in texts(app.error))


def test_wrong_key_is_reported(start_ui: Callable[..., AppTest], api_url: str) -> None:
    app = start_ui(api_url, token="wrong-key", page="gallery")
    assert not app.exception
    assert any("wrong API key" in e for e in texts(app.error))


# --- The client's error messages -----------------------------------------------------------------


def test_error_message_of_a_validation_error() -> None:
    sentence = "invalid request: query min_face_size: Input should be >= 1"
    errors = [{"loc": ["query", "min_face_size"], "msg": "Input should be >= 1"}]
    body = {"detail": sentence, "errors": errors}
    assert error_message(httpx.Response(422, json=body)) == sentence


def test_error_message_of_a_proxy_page() -> None:
    page = httpx.Response(502, text="<html><body>502 Bad Gateway</body></html>")
    assert error_message(page) == "HTTP 502 Bad Gateway"


def test_client_raises_with_status(api: ApiClient) -> None:
    with pytest.raises(ApiError) as caught:
        api.delete_user(2**62, DEFAULT)
    assert caught.value.status == 404
    assert "no user with id" in str(caught.value)
