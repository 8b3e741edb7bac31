"""End to end: the API (uvicorn), the UI (streamlit) and nginx with the project's config, driven
through nginx by headless Chromium (Debian's, via Playwright) and by plain HTTP.

Screenshots go to `artifacts/e2e/` (git ignores it). Needs Debian's `nginx-light` and `chromium`;
without them the tests are skipped with the reason.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image, ImageOps
from playwright.sync_api import BrowserContext, Page, expect, sync_playwright
from websockets.sync.client import connect

from tests.data import FACES, REPO
from tests.servers import CHROMIUM, CHROMIUM_ARGS, NGINX, api_server, free_port, nginx_server, ui_server

logger = logging.getLogger(__name__)

ARTIFACTS = REPO / "artifacts" / "e2e"
TOKEN = "e2e-" + uuid.uuid4().hex
KEY = {"X-API-Key": TOKEN}
TWO_PEOPLE = FACES / "groups" / "fr_two_people.jpg"  # Obama (left) and Biden (right)
OBAMA = FACES / "portraits" / "Barack_Obama"
CAMERA_PHOTO = OBAMA / "fr_obama-480p.jpg"
NO_FACE = FACES / "noface" / "skimage_coffee.png"
CAMERA_SIZE = (640, 480)
LIVENESS_TIMEOUT_S = 10  # a still photo never passes: the session ends with its deadline
# A page's work: an upload, one API call on a loaded 2-core machine, the redraw.
STEP_TIMEOUT_MS = 90_000
BUSY_SIGNS = ("stStatusWidget", "stSpinner", "stSkeleton")
QUIET_S = 1.0  # longer than the indicator's delay and the gap between a run and its st.rerun

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(NGINX).is_file(), reason=f"no nginx at {NGINX}: apt install nginx-light"),
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"no Chromium at {CHROMIUM}: apt install chromium"),
]


@dataclass(frozen=True)
class Stack:
    gateway: str  # nginx: the only address the browser and the HTTP checks use
    api: str


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("e2e")
    nginx_port, ui_port = free_port(), free_port()
    gateway = f"http://127.0.0.1:{nginx_port}"
    # The API is served under /api/ by nginx, so its docs must ask for /api/openapi.json.
    ui_address = f"127.0.0.1:{ui_port}"
    # The UI, too, reaches the API through the gateway, which puts nginx on its every request.
    with (
        api_server(work, TOKEN, root_path="/api", LIVENESS_TIMEOUT=str(LIVENESS_TIMEOUT_S)) as api,
        nginx_server(work, nginx_port, api.removeprefix("http://"), ui_address),
        # The browser's sockets go to the page's own origin, as in deploy/docker-compose.yml.
        ui_server(work, f"{gateway}/api", TOKEN, ui_port, browser_api_url="/api"),
    ):
        yield Stack(gateway=gateway, api=api)


def write_y4m(photo: Path, target: Path, size: tuple[int, int] = CAMERA_SIZE, frames: int = 5) -> None:
    """A still photo as a Y4M video, the format Chromium's fake camera plays (in a loop): a text
    header, then per frame "FRAME" and the raw I420 planes (full-size Y, quarter-size Cb and Cr)."""
    ycbcr = ImageOps.fit(Image.open(photo).convert("RGB"), size).convert("YCbCr")
    luma, blue, red = ycbcr.split()
    half = (size[0] // 2, size[1] // 2)
    planes = luma.tobytes() + blue.resize(half).tobytes() + red.resize(half).tobytes()
    with target.open("wb") as video:
        video.write(f"YUV4MPEG2 W{size[0]} H{size[1]} F5:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            video.write(b"FRAME\n" + planes)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    # Debian's Chromium, never a downloaded one; a fresh profile in a temporary folder. Its camera
    # is a fake one showing a still photo, allowed without asking (only the Liveness page uses it).
    profile = tmp_path_factory.mktemp("chromium-profile")
    camera = tmp_path_factory.mktemp("camera") / "still-photo.y4m"
    write_y4m(CAMERA_PHOTO, camera)
    fake_camera = [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={camera}",
    ]
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            args=[*CHROMIUM_ARGS, *fake_camera],
            headless=True,
            viewport={"width": 1400, "height": 1700},
        )
        context.set_default_timeout(STEP_TIMEOUT_MS)
        expect.set_options(timeout=STEP_TIMEOUT_MS)  # assertions have their own default (5 s)
        yield context
        context.close()


@pytest.fixture
def page(browser: BrowserContext) -> Iterator[Page]:
    tab = browser.new_page()
    tab.on("console", lambda message: logger.info("browser console: %s", message.text))
    yield tab
    tab.close()


def open_page(page: Page, url: str) -> None:
    page.goto(url)
    # The HTML shell arrives first; the app exists once Streamlit's WebSocket (through nginx) works.
    expect(page.get_by_test_id("stApp")).to_be_visible()
    wait_idle(page)


def wait_idle(page: Page) -> None:
    """Wait until Streamlit has finished its script runs and drawn every element.

    Busy signs: the "running" indicator (shown while a script runs, but only after a short delay),
    a spinner, and the grey skeletons of widgets whose code is still loading. A page that reruns
    itself (st.rerun) is briefly quiet between two runs, so the page must stay quiet for a while.
    """
    busy = page.locator(", ".join(f'[data-testid="{sign}"]' for sign in BUSY_SIGNS))
    deadline = time.monotonic() + STEP_TIMEOUT_MS / 1000
    quiet_since: float | None = None
    while time.monotonic() < deadline:
        now = time.monotonic()
        if busy.count():
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= QUIET_S:
            return
        page.wait_for_timeout(100)
    raise AssertionError(f"Streamlit was still busy after {STEP_TIMEOUT_MS / 1000:.0f} s")


def wait_for_text(page: Page, text: str | re.Pattern[str]) -> None:
    """Wait for `text` to show, then for the run that drew it to finish (screenshots come after)."""
    expect(page.get_by_text(text).first).to_be_visible()
    wait_idle(page)


def upload(page: Page, uploader_label: str, photo: Path) -> None:
    uploader = page.get_by_test_id("stFileUploader").filter(has_text=uploader_label)
    uploader.locator("input[type=file]").set_input_files(photo)
    # The browser sends the file to Streamlit in the background: a form submitted before it has
    # arrived has no file. The file's chip shows a spinner until then.
    expect(uploader.get_by_test_id("stFileChipName")).to_have_attribute("title", photo.name)
    expect(uploader.get_by_test_id("stFileChipIconSpinner")).to_have_count(0)


def api_register(http: httpx.Client, name: str, photo: Path) -> dict[str, Any]:
    response = http.post(
        "/api/register", headers=KEY, data={"name": name}, files={"image": (photo.name, photo.read_bytes())}
    )
    assert response.status_code == 201, response.text
    return {"id": response.json()["user_id"], "name": name}


def api_faces(http: httpx.Client, person: dict[str, Any]) -> int:
    response = http.get(f"/api/users/{person['id']}", headers=KEY)
    assert response.status_code == 200, response.text
    return response.json()["face_count"]


def person_label(person: dict[str, Any]) -> str:
    return f"{person['name']} (id {person['id']})"  # as the Gallery lists a person


def register(page: Page, name: str, photo: Path) -> None:
    page.get_by_label("Name", exact=True).fill(name)
    upload(page, "Photo with exactly one face", photo)
    page.get_by_role("button", name="Register").click()


def choose_person(page: Page, label: str) -> None:
    """Pick `label` in the Gallery's "Person" box, as a user does: open the list, click the name."""
    page.get_by_test_id("stSelectbox").filter(has_text="Person").click()
    page.get_by_role("option", name=label).click()
    wait_idle(page)


def uploaded_files(page: Page, uploader_label: str) -> list[str]:
    uploader = page.get_by_test_id("stFileUploader").filter(has_text=uploader_label)
    expect(uploader).to_be_visible()
    return [chip.get_attribute("title") or "" for chip in uploader.get_by_test_id("stFileChipName").all()]


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)


# --- the browser, through nginx ------------------------------------------------------------------


def test_detect_in_the_browser(stack: Stack, page: Page) -> None:
    open_page(page, stack.gateway + "/")
    expect(page.get_by_role("heading", name="Detect faces")).to_be_visible()
    upload(page, "Upload a photo", TWO_PEOPLE)
    wait_for_text(page, "2 faces found")
    expect(page.get_by_test_id("stImage").locator("img")).to_be_visible()
    expect(page.get_by_test_id("stException")).to_have_count(0)
    screenshot(page, "detect-two-people")


def test_register_then_recognise_in_the_browser(stack: Stack, page: Page, http: httpx.Client) -> None:
    name = f"Barack Obama {uuid.uuid4().hex[:4]}"
    open_page(page, stack.gateway + "/gallery")
    register(page, name, TWO_PEOPLE)  # refused: two faces
    wait_for_text(page, f"Could not register {name}: exactly one face is needed, found 2 faces")
    expect(page.get_by_test_id("stException")).to_have_count(0)
    screenshot(page, "gallery-refused")

    register(page, name, OBAMA / "fr_obama1.jpg")
    wait_for_text(page, re.compile(rf"Registered {re.escape(name)} \(id \d+\)"))
    screenshot(page, "gallery-registered")

    # Another photo of him, beside a man nobody registered.
    open_page(page, stack.gateway + "/recognize")
    upload(page, "Upload a photo", TWO_PEOPLE)
    wait_for_text(page, "2 faces: 1 recognised")
    expect(page.get_by_text(f"Recognised: {name}")).to_be_visible()
    expect(page.get_by_test_id("stException")).to_have_count(0)
    screenshot(page, "recognise-two-people")
    # Gone again: a second registration of the same man by another test would make the two
    # equally near, and the match's margin over the next person then names neither.
    for user in http.get("/api/users", params={"limit": 200}, headers=KEY).json()["users"]:
        if user["name"] == name:
            http.delete(f"/api/users/{user['id']}", headers=KEY)


def test_gallery_photo_stays_with_the_person_it_was_chosen_for(
    stack: Stack, page: Page, http: httpx.Client
) -> None:
    """Issue 14, point 2, as a user did it: choose a photo in "Another photo of A", switch the choice
    to B, press Add photo. Then add it to A with a double click: stored once."""
    suffix = uuid.uuid4().hex[:4]
    kit = api_register(http, f"Kit Harington {suffix}", OBAMA / "fr_obama1.jpg")
    rose = api_register(http, f"Rose Leslie {suffix}", FACES / "portraits" / "Joe_Biden" / "fr_biden.jpg")
    open_page(page, stack.gateway + "/gallery")
    choose_person(page, person_label(kit))
    upload(page, f"Another photo of {kit['name']}", OBAMA / "fr_obama2.jpg")
    add = page.get_by_role("button", name="Add photo")
    expect(add).to_be_enabled()

    choose_person(page, person_label(rose))
    # Rose's own uploader, empty: the photo of Kit cannot be added to her.
    assert uploaded_files(page, f"Another photo of {rose['name']}") == []
    expect(add).to_be_disabled()
    add.click(force=True)  # what the user did; a disabled button ignores it
    wait_idle(page)
    assert api_faces(http, rose) == 1 and api_faces(http, kit) == 1

    choose_person(page, person_label(kit))
    upload(page, f"Another photo of {kit['name']}", OBAMA / "fr_obama2.jpg")
    add.dblclick()  # the second click comes while the first one's run is still going
    wait_for_text(page, f"{kit['name']} now has 2 photos.")
    assert uploaded_files(page, f"Another photo of {kit['name']}") == []  # emptied after the success
    expect(add).to_be_disabled()
    assert api_faces(http, kit) == 2 and api_faces(http, rose) == 1
    expect(page.get_by_test_id("stException")).to_have_count(0)
    screenshot(page, "gallery-photo-added")

    page.get_by_text(f"Yes, delete {kit['name']} and all their photos").click()
    wait_idle(page)
    page.get_by_role("button", name="Delete", exact=True).click()
    wait_for_text(page, f"Deleted {kit['name']}.")
    # The choice goes back to nobody instead of jumping to Rose with a photo still chosen.
    expect(page.get_by_text("Choose a person to add a photo of them or to delete them.")).to_be_visible()
    expect(page.get_by_role("button", name="Add photo")).to_have_count(0)
    assert api_faces(http, rose) == 1
    screenshot(page, "gallery-deleted")
    http.delete(f"/api/users/{rose['id']}", headers=KEY)


def api_add_face(http: httpx.Client, person: dict[str, Any], photo: Path) -> None:
    response = http.post(
        f"/api/users/{person['id']}/faces", headers=KEY, files={"image": (photo.name, photo.read_bytes())}
    )
    assert response.status_code == 201, response.text


def api_face_ids(http: httpx.Client, person: dict[str, Any]) -> list[int]:
    response = http.get(f"/api/users/{person['id']}/faces", headers=KEY)
    assert response.status_code == 200, response.text
    return [face["id"] for face in response.json()["faces"]]


def test_gallery_deletes_single_photos_but_not_the_last(stack: Stack, page: Page, http: httpx.Client) -> None:
    """A wrong photo removed from a person, in the browser; their last photo is refused with the
    API's message (the person is deleted instead)."""
    person = api_register(http, f"Barack Obama {uuid.uuid4().hex[:4]}", OBAMA / "fr_obama1.jpg")
    api_add_face(http, person, OBAMA / "fr_obama2.jpg")
    first, second = api_face_ids(http, person)
    open_page(page, stack.gateway + "/gallery")
    choose_person(page, person_label(person))
    expect(page.get_by_text(f"2 stored photos of {person['name']}")).to_be_visible()
    expect(page.get_by_text(f"Photo {first}", exact=True)).to_be_visible()
    screenshot(page, "gallery-photos")

    # Each photo's button is keyed by its id (Streamlit puts the key in a class of its element).
    page.locator(f".st-key-delete-face-{first} button").click()
    wait_for_text(page, f"Deleted photo {first} of {person['name']}; 1 photo left.")
    expect(page.get_by_text(f"Photo {first}", exact=True)).to_have_count(0)
    assert api_face_ids(http, person) == [second]

    page.locator(f".st-key-delete-face-{second} button").click()
    wait_for_text(page, re.compile(rf"Could not delete photo {second}: .*delete the user"))
    assert api_face_ids(http, person) == [second]
    expect(page.get_by_test_id("stException")).to_have_count(0)
    screenshot(page, "gallery-last-photo-refused")
    http.delete(f"/api/users/{person['id']}", headers=KEY)


def test_camera_shows_what_the_recognise_page_shows(stack: Stack, page: Page, http: httpx.Client) -> None:
    """A snapshot of Chromium's fake camera (the photo of Obama): the summary, the numbered photo, the
    table."""
    person = api_register(http, f"Barack Obama {uuid.uuid4().hex[:4]}", OBAMA / "fr_obama1.jpg")
    open_page(page, stack.gateway + "/camera")
    # A snapshot taken before the fake camera's first frames is black.
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=stCameraInput] video')]"
        ".some((video) => video.readyState >= 2 && video.currentTime > 1)"
    )
    page.get_by_role("button", name="Take Photo").click()
    wait_for_text(page, "1 face: 1 recognised")
    expect(page.get_by_text(f"Recognised: {person['name']}")).to_be_visible()
    expect(page.get_by_test_id("stDataFrame")).to_be_visible()
    expect(page.get_by_test_id("stException")).to_have_count(0)
    screenshot(page, "camera-snapshot")
    http.delete(f"/api/users/{person['id']}", headers=KEY)


def test_recognise_shows_a_photo_without_a_face(stack: Stack, page: Page) -> None:
    open_page(page, stack.gateway + "/recognize")
    upload(page, "Upload a photo", NO_FACE)
    wait_for_text(page, re.compile("Recognition failed: .*no face"))
    expect(page.get_by_test_id("stImage").locator("img")).to_be_visible()
    screenshot(page, "recognise-no-face")


def test_the_ui_asks_no_other_host(stack: Stack, browser: BrowserContext) -> None:
    """Every page, its icons and fonts come from the UI's own server: the UI works offline."""
    origin = urlsplit(stack.gateway).netloc
    requested: list[str] = []
    tab = browser.new_page()
    tab.on("request", lambda request: requested.append(request.url))
    try:
        for path in ("/", "/gallery", "/recognize", "/camera", "/liveness"):
            open_page(tab, stack.gateway + path)
            # Chromium fetches the favicon outside the page, unseen by "request": its address, then.
            requested.append(tab.eval_on_selector("link[rel='shortcut icon']", "(link) => link.href"))
        tab.get_by_role("button", name="Start").click()
        component = tab.frame_locator('iframe[title="Liveness check"]')
        expect(component.get_by_test_id("progress")).to_contain_text("challenges done")
        wait_idle(tab)
    finally:
        tab.close()
    assert any(url.endswith(".woff2") for url in requested)  # the fonts were asked for, and ...
    # ... like everything else, from the page's own server (or made in the page: data:, blob:).
    assert [url for url in requested if urlsplit(url).scheme in ("http", "https", "ws", "wss")
            and urlsplit(url).netloc != origin] == []  # fmt: skip


def test_liveness_with_a_still_photo_as_the_camera(stack: Stack, page: Page) -> None:
    """The whole path: Start asks the API for a ticket, the page's component opens the camera
    (Chromium's fake one, showing a photo), streams frames through nginx's /api/ws/ and shows the
    instructions, then the verdict: a photo cannot do the challenges."""
    open_page(page, stack.gateway + "/liveness")
    expect(page.get_by_role("heading", name="Liveness")).to_be_visible()
    page.get_by_role("button", name="Start").click()
    component = page.frame_locator('iframe[title="Liveness check"]')
    instruction = component.get_by_test_id("instruction")
    expect(instruction).to_have_text(re.compile("Blink|Turn your head|Open your mouth"))
    expect(component.get_by_test_id("progress")).to_contain_text(re.compile(r"0 of [23] challenges done"))
    expect(component.get_by_test_id("status")).not_to_have_class("error")
    screenshot(page, "liveness-instruction")

    # The component is a document of its own, in the UI's font all the same.
    frame = page.locator('iframe[title="Liveness check"]').element_handle().content_frame()
    assert frame is not None
    frame.wait_for_function(
        "() => [...document.fonts].some((f) => f.family.includes('Source Sans') && f.status === 'loaded')"
    )
    assert frame.evaluate("() => getComputedStyle(document.body).fontFamily").startswith('"Source Sans"')

    verdict = component.get_by_test_id("verdict")
    expect(verdict).to_be_visible(timeout=(LIVENESS_TIMEOUT_S + 60) * 1000)
    expect(verdict).to_contain_text("Not verified as a live person")
    # Sentences, not the reasons' codes (those stay in an attribute).
    expect(verdict.locator('li[data-reason="expired"]')).to_contain_text("The deadline passed with 0 of")
    expect(verdict).not_to_contain_text("expired:")
    # The frames reached the detector: the photo's face was seen, so the reason is not a missing face.
    expect(verdict.locator('li[data-reason="no_face"]')).to_have_count(0)
    expect(instruction).to_have_text("Finished")
    screenshot(page, "liveness-verdict")


def test_activity_shows_the_access_log_in_the_browser(stack: Stack, page: Page, http: httpx.Client) -> None:
    """Decisions made through the gateway show on the Activity page (EVENTS=decisions: no faces)."""
    recognised = http.post("/api/recognize", files={"image": ("p.jpg", TWO_PEOPLE.read_bytes())}, headers=KEY)
    assert recognised.status_code == 200, recognised.text
    open_page(page, stack.gateway + "/activity")
    expect(page.get_by_role("heading", name="Activity")).to_be_visible()
    wait_for_text(page, re.compile(r"\d+ events? \(newest first"))
    expect(page.get_by_text("No faces stored (EVENTS=decisions keeps none")).to_be_visible()
    expect(page.get_by_test_id("stDataFrame")).to_be_visible()
    expect(page.get_by_text("No unknown visitors")).to_be_visible()
    expect(page.get_by_test_id("stException")).to_have_count(0)
    screenshot(page, "activity")


# --- plain HTTP, through nginx -------------------------------------------------------------------


@pytest.fixture(scope="module")
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.gateway, timeout=120.0) as client:
        yield client


def test_api_health_through_the_gateway(http: httpx.Client) -> None:
    response = http.get("/api/health")
    assert response.status_code == 200
    assert response.json()["status"] == "healthy"


def test_api_docs_through_the_gateway(http: httpx.Client) -> None:
    docs = http.get("/api/docs")
    assert docs.status_code == 200
    assert "/api/openapi.json" in docs.text  # the page asks for the schema under the prefix
    schema = http.get("/api/openapi.json")
    assert schema.status_code == 200
    assert "/detect" in schema.json()["paths"]


def test_detect_through_the_gateway(http: httpx.Client) -> None:
    response = http.post(
        "/api/detect",
        headers={"X-API-Key": TOKEN},
        params={"min_face_size": 40},
        files={"file": (TWO_PEOPLE.name, TWO_PEOPLE.read_bytes())},
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["boxes"]) == 2


def test_websocket_stream_through_the_gateway(stack: Stack) -> None:
    """`/api/ws/...` is upgraded to a WebSocket and reaches the API's streaming endpoint."""
    url = stack.gateway.replace("http://", "ws://", 1) + "/api/ws/detect"
    with connect(url, additional_headers={"X-API-Key": TOKEN}, proxy=None) as socket:
        socket.send(TWO_PEOPLE.read_bytes())
        answer = json.loads(socket.recv(timeout=STEP_TIMEOUT_MS / 1000))
    assert answer["frame"] == 1
    assert len(answer["boxes"]) == 2


def test_key_is_still_required_through_the_gateway(http: httpx.Client) -> None:
    response = http.post("/api/detect", files={"file": (TWO_PEOPLE.name, TWO_PEOPLE.read_bytes())})
    assert response.status_code == 401
    assert "detail" in response.json()


def test_oversized_upload_is_refused_with_413(http: httpx.Client) -> None:
    body = b"\xff\xd8\xff" + bytes(25 * 1024 * 1024)  # a 25 MB "JPEG"
    response = http.post(
        "/api/detect",
        headers={"X-API-Key": TOKEN, "X-Request-ID": "big-one"},
        files={"file": ("big.jpg", body)},
    )
    assert response.status_code == 413
    assert "detail" in response.json()  # JSON like the API's own errors, though nginx answered
    assert response.headers["X-Request-ID"] == "big-one"


@pytest.mark.parametrize("path", ["/api/health", "/"])  # answered by the API, by the UI
def test_request_id_is_kept_or_made(http: httpx.Client, path: str) -> None:
    given = http.get(path, headers={"X-Request-ID": "trace-me-42"})
    assert given.headers.get_list("X-Request-ID") == ["trace-me-42"]
    made = http.get(path)
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["X-Request-ID"])
    # An id that is not sane is replaced, the same way in nginx and in the API.
    odd = http.get(path, headers={"X-Request-ID": "no spaces allowed"})
    assert re.fullmatch(r"[0-9a-f]{32}", odd.headers["X-Request-ID"])


def test_ui_is_served_at_the_root(http: httpx.Client) -> None:
    response = http.get("/")
    assert response.status_code == 200
    assert "<noscript>" in response.text.lower() or "streamlit" in response.text.lower()
