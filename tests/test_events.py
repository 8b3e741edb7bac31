"""The access log (issue 28): one event per face per decision, the stream's dedup, retention, who may
read what, and an answer that never depends on the log being writable."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial

import numpy as np
import psycopg
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from facegate.api.deps import Services
from facegate.chips import CHIP_SIZE
from facegate.events import EventLog, Sighting
from facegate.gallery.embedded import EmbeddedServer
from facegate.imaging import load_image_file
from tests.data import FACES
from tests.servers import API_START_TIMEOUT, clean_env
from tests.support import API_KEY, app_settings, running_app, services
from tests.test_collections_api import BIDEN, OBAMA, photo, register

TWO_PEOPLE = FACES / "groups" / "fr_obama_and_biden.jpg"
# Two collections, and keys of the `audit` scope for both, for one of them, and a `recognize` key.
SEEN, OTHER = "events-seen", "events-other"
AUDIT_KEY, BOUND_KEY, RECOGNIZE_KEY = (
    f"{kind}-{uuid.uuid4().hex}" for kind in ("audit", "bound", "recognize")
)
KEYS = f"auditor:audit:{AUDIT_KEY},bound:audit:{BOUND_KEY}:{SEEN},camera:recognize:{RECOGNIZE_KEY}"


@pytest.fixture(scope="module")
def app(pg_server: EmbeddedServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """An app that logs faces (chips included), with a stream dedup window no test outlasts."""
    settings = app_settings(
        pg_server,
        tmp_path_factory.mktemp("facegate-events"),
        events="faces",
        event_stream_dedup_s=3600,
        facegate_api_keys=KEYS,
    )
    for client in running_app(settings):
        client.headers["X-API-Key"] = API_KEY
        for name in (SEEN, OTHER):
            assert client.post("/collections", json={"name": name}).status_code == 201
        yield client


def log(app: TestClient) -> EventLog:
    return services(app).events


def events(app: TestClient, key: str = AUDIT_KEY, **params: object) -> list[dict]:
    log(app).flush()
    response = app.get("/events", params={"limit": 500, **params}, headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    return response.json()["events"]


def recognize(app: TestClient, collection: str, path: object = TWO_PEOPLE, key: str = API_KEY) -> dict:
    response = app.post(
        "/recognize", params={"collection": collection}, files=photo(path), headers={"X-API-Key": key}
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_each_face_of_each_request_is_one_event_with_its_decision(app: TestClient) -> None:
    person = register(app, SEEN, f"Obama {uuid.uuid4().hex[:6]}", OBAMA / "fr_obama.jpg")
    before = {event["id"] for event in events(app, collection=SEEN)}
    answer = recognize(app, SEEN, key=RECOGNIZE_KEY)

    new = [event for event in events(app, collection=SEEN) if event["id"] not in before]
    assert len(new) == len(answer["faces"]) >= 3  # the two people and a small face behind them
    assert [e["id"] for e in new] == sorted((e["id"] for e in new), reverse=True)  # newest first
    by_box = {tuple(round(v) for v in event["box"]): event for event in new}
    for face in answer["faces"]:
        event = by_box[tuple(round(v) for v in face["box"])]
        assert event["collection"] == SEEN and event["source"] == "recognize"
        assert event["key_name"] == "camera"
        assert event["status"] == face["status"]
        expected = face["distance"]
        assert event["distance"] == (None if expected is None else pytest.approx(expected, abs=1e-5))
        assert event["threshold"] == pytest.approx(answer["threshold"])
        assert event["threshold_source"] == answer["threshold_source"]
        assert event["quality"] == face["quality"] and event["has_face"]
        matched = face["matched_user"]
        assert (event["user_id"], event["user_name"]) == (
            (matched["id"], matched["name"]) if matched else (None, None)
        )
    assert any(event["user_id"] == person["user_id"] and event["status"] == "match" for event in new)

    chip = app.get(f"/events/{new[0]['id']}/face", headers={"X-API-Key": AUDIT_KEY})
    assert chip.status_code == 200 and chip.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(chip.content)).size == (CHIP_SIZE, CHIP_SIZE)


def test_filters_and_cursor_pages_through_newest_first(app: TestClient) -> None:
    recognize(app, SEEN)
    everything = events(app, collection=SEEN)
    assert len(everything) >= 3
    paged, cursor = [], None
    while True:
        params = {"collection": SEEN, "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = app.get("/events", params=params, headers={"X-API-Key": AUDIT_KEY}).json()
        paged += page["events"]
        if (cursor := page["next_cursor"]) is None:
            break
    assert [e["id"] for e in paged] == [e["id"] for e in everything]
    matches = events(app, collection=SEEN, status="match")
    assert matches and all(e["status"] == "match" for e in matches)
    assert events(app, collection=SEEN, until="2000-01-01T00:00:00Z") == []
    assert len(events(app, collection=SEEN, since="2000-01-01T00:00:00Z")) == len(everything)
    assert events(app, collection=SEEN, source="stream", person=2**40) == []

    exported = app.get("/events.csv", params={"collection": SEEN}, headers={"X-API-Key": AUDIT_KEY})
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [int(row["id"]) for row in rows] == [e["id"] for e in everything]
    assert {row["status"] for row in rows} == {e["status"] for e in everything}


def test_a_bound_key_reads_only_its_collections_events(app: TestClient) -> None:
    recognize(app, OTHER)
    recognize(app, SEEN)
    everything = events(app)
    assert {e["collection"] for e in everything} >= {SEEN, OTHER}
    bound = events(app, BOUND_KEY)
    assert bound and {e["collection"] for e in bound} == {SEEN}
    refused = app.get("/events", params={"collection": OTHER}, headers={"X-API-Key": BOUND_KEY})
    assert refused.status_code == 403
    other = next(e for e in everything if e["collection"] == OTHER)
    assert app.get(f"/events/{other['id']}/face", headers={"X-API-Key": BOUND_KEY}).status_code == 404
    assert app.get(f"/events/{other['id']}/face", headers={"X-API-Key": AUDIT_KEY}).status_code == 200
    # Reading the log takes the audit scope: a camera's key cannot, the admin's can.
    assert app.get("/events", headers={"X-API-Key": RECOGNIZE_KEY}).status_code == 403
    assert app.get("/events", headers={"X-API-Key": API_KEY}).status_code == 200
    assert app.get("/events.csv", headers={"X-API-Key": RECOGNIZE_KEY}).status_code == 403


def test_a_stream_logs_a_person_once_per_window_not_once_per_frame(app: TestClient) -> None:
    collection = f"stream-{uuid.uuid4().hex[:8]}"
    assert app.post("/collections", json={"name": collection}).status_code == 201
    register(app, collection, "Joe Biden", BIDEN / "fr_biden.jpg")
    frame = (BIDEN / "fr_biden2.jpg").read_bytes()
    with app.websocket_connect(
        f"/ws/recognize?collection={collection}", headers={"X-API-Key": API_KEY}
    ) as ws:
        for number in range(1, 4):
            ws.send_bytes(frame)
            answer = ws.receive_json()
            assert answer["frame"] == number and answer["status"] == "match"
    logged = events(app, collection=collection)
    assert len(logged) == 1
    assert logged[0]["source"] == "stream" and logged[0]["user_name"] == "Joe Biden"


def test_the_answer_is_unchanged_when_the_log_cannot_be_written(app: TestClient) -> None:
    """A database that refuses the events (here a trigger answering 'disk full') costs the answer
    nothing: the same body, 200, and the events are counted as dropped."""
    baseline = recognize(app, SEEN)
    count = len(events(app))
    dropped = log(app).dropped
    dsn = services(app).settings.database_url
    assert dsn is not None
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION refuse_events() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'no space left' USING ERRCODE = 'disk_full'; END $$"
        )
        conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON events EXECUTE FUNCTION refuse_events()")
        try:
            refused = recognize(app, SEEN)
            log(app).flush()
        finally:
            conn.execute("DROP TRIGGER refuse ON events")
            conn.execute("DROP FUNCTION refuse_events()")
    assert refused == baseline
    assert log(app).dropped == dropped + len(baseline["faces"])
    assert len(events(app)) == count
    assert app.get("/health").status_code == 200


def test_expired_events_are_purged_by_the_writer_in_batches(app: TestClient) -> None:
    events_log = log(app)
    real_clock = events_log.clock
    start = datetime.now(UTC) + timedelta(days=400)  # after anything the other tests wrote
    try:
        events_log.clock = lambda: start
        recognize(app, SEEN)
        kept_until = events(app, since=start.isoformat())
        assert kept_until, "the events are stamped by the log's clock"
        # 31 days on, the next write purges every event older than 30 days: the one above and all
        # the other tests' (stamped now), but not the one it writes.
        events_log.clock = lambda: start + timedelta(days=31)
        recognize(app, OTHER)
        left = events(app)
        assert left and {e["collection"] for e in left} == {OTHER}
        assert all(datetime.fromisoformat(e["at"]) == start + timedelta(days=31) for e in left)
        # The purge goes in batches: a batch of 1 still purges them all.
        events_log.clock = lambda: start + timedelta(days=62)
        assert events_log.purge(batch=1) == len(left)
        assert events(app) == []
    finally:
        events_log.clock = real_clock


def test_events_off_writes_nothing(app: TestClient) -> None:
    core: Services = services(app)
    image = load_image_file(OBAMA / "fr_obama.jpg")
    recognition = core.recognizer.identify(core.pipeline.analyse(image), collection=SEEN)
    before = len(events(app))
    off = EventLog(core.gallery, "off", 30)
    off.record(recognition, image, Sighting(SEEN, "recognize", "admin"))
    off.flush()
    off.close()
    assert len(events(app)) == before
    on = EventLog(core.gallery, "decisions", 30)
    on.record(recognition, image, Sighting(SEEN, "recognize", "admin"))
    on.close()
    after = events(app)
    written = len(recognition.faces)
    assert len(after) == before + written
    assert not any(event["has_face"] for event in after[:written])  # `decisions` keeps no chip


def test_merge_moves_the_events_too(app: TestClient) -> None:
    collection = f"merge-{uuid.uuid4().hex[:8]}"
    assert app.post("/collections", json={"name": collection}).status_code == 201
    merged = register(app, collection, "Obama once", OBAMA / "fr_obama.jpg")["user_id"]
    recognize(app, collection, OBAMA / "fr_obama1.jpg")
    kept = register(app, collection, "Barack Obama", OBAMA / "fr_obama2.jpg", allow_duplicate="true")[
        "user_id"
    ]
    (seen,) = events(app, collection=collection)
    assert seen["user_id"] == merged
    response = app.post(f"/users/{kept}/merge", params={"collection": collection}, json={"from": merged})
    assert response.status_code == 200, response.text
    (moved,) = events(app, collection=collection)
    assert (moved["user_id"], moved["user_name"]) == (kept, "Barack Obama")
    assert events(app, collection=collection, person=merged) == []
    assert np.isfinite(moved["distance"])


# --- unknown visitors ----------------------------------------------------------------------------

JOLIE, DORSEY = FACES / "portraits" / "Angelina_Jolie", FACES / "portraits" / "Jack_Dorsey"


def visitors(app: TestClient, collection: str) -> list[dict]:
    log(app).flush()
    response = app.get("/visitors", params={"collection": collection}, headers={"X-API-Key": AUDIT_KEY})
    assert response.status_code == 200, response.text
    return response.json()["visitors"]


def test_unknown_faces_group_into_visitors_to_enrol_add_or_forget(app: TestClient) -> None:
    collection = f"visitors-{uuid.uuid4().hex[:8]}"
    assert app.post("/collections", json={"name": collection}).status_code == 201
    for path in (
        BIDEN / "fr_biden.jpg",
        BIDEN / "fr_biden.jpg",
        JOLIE / "deepface_img5.jpg",
        DORSEY / "deepface_img16.jpg",
    ):
        (face,) = recognize(app, collection, path)["faces"]
        assert face["status"] == "no_match"
    seen = visitors(app, collection)
    assert sorted(v["visits"] for v in seen) == [1, 1, 2]
    biden = next(v for v in seen if v["visits"] == 2)
    dorsey_visitor, jolie_visitor = [v for v in seen if v["visits"] == 1]  # Dorsey was seen last
    logged = events(app, collection=collection)
    assert sorted(e["visitor_id"] for e in logged).count(biden["id"]) == 2
    face = app.get(
        f"/visitors/{biden['id']}/face", params={"collection": collection}, headers={"X-API-Key": AUDIT_KEY}
    )
    assert face.status_code == 200 and face.headers["content-type"] == "image/jpeg"

    # Enrol: a new person, recognised in a photo the camera never saw.
    enrolled = app.post(
        f"/visitors/{biden['id']}/enrol", params={"collection": collection}, json={"name": "Joe Biden"}
    )
    assert enrolled.status_code == 201, enrolled.text
    (match,) = recognize(app, collection, BIDEN / "fr_biden2.jpg")["faces"]
    assert match["status"] == "match" and match["matched_user"]["id"] == enrolled.json()["user_id"]
    again = app.post(
        f"/visitors/{biden['id']}/enrol", params={"collection": collection}, json={"name": "Joe"}
    )
    assert again.status_code == 404

    # Add to: the visitor was someone registered since.
    jolie = register(app, collection, "Angelina Jolie", JOLIE / "deepface_img2.jpg")["user_id"]
    wrong = app.post(f"/visitors/{dorsey_visitor['id']}/add-to/{jolie}", params={"collection": collection})
    right = app.post(f"/visitors/{jolie_visitor['id']}/add-to/{jolie}", params={"collection": collection})
    assert right.status_code == 200 and right.json()["faces_added"] == 1, right.text
    assert wrong.status_code == 422, wrong.text  # a face that does not look like her is not added
    assert app.get(f"/users/{jolie}", params={"collection": collection}).json()["face_count"] == 2

    # Forget: the visitor and their faces go; their event stays, naming no visitor.
    forgotten = app.delete(f"/visitors/{dorsey_visitor['id']}", params={"collection": collection})
    assert forgotten.status_code == 200, forgotten.text
    assert visitors(app, collection) == []
    assert all(e["visitor_id"] is None for e in events(app, collection=collection))
    assert (
        app.delete(f"/visitors/{dorsey_visitor['id']}", params={"collection": collection}).status_code == 404
    )


def test_the_command_line_prints_and_exports_the_log(app: TestClient) -> None:
    recognize(app, SEEN)
    logged = events(app, collection=SEEN)
    settings = services(app).settings
    assert settings.database_url is not None
    env = clean_env(
        DATABASE_URL=settings.database_url,
        APP_TOKEN=API_KEY,
        FACEGATE_DATA_DIR=str(settings.facegate_data_dir),
    )
    run = partial(subprocess.run, env=env, capture_output=True, text=True, timeout=API_START_TIMEOUT)
    since = (datetime.fromisoformat(logged[-1]["at"]) - timedelta(seconds=1)).isoformat()
    exported = run(
        [sys.executable, "-m", "facegate", "events", "--collection", SEEN, "--since", since, "--csv"]
    )
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert [int(row["id"]) for row in rows] == [e["id"] for e in logged]
    assert [row["status"] for row in rows] == [e["status"] for e in logged]
    listed = run([sys.executable, "-m", "facegate", "events", "--collection", SEEN, "--limit", "2"])
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert len(lines) == 2 and f"#{logged[0]['id']} {SEEN} recognize key admin: " in lines[0]
