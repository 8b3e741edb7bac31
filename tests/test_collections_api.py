"""Collections over the API (issue 16): isolation, keys bound to collections, top-K candidates, the
identity guards, single-photo management, and export/import through the CLI."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from facegate.gallery import DEFAULT_COLLECTION
from facegate.gallery.embedded import EmbeddedServer
from tests.data import FACES
from tests.servers import API_START_TIMEOUT, clean_env
from tests.support import API_KEY, app_settings, running_app

PORTRAITS = FACES / "portraits"
OBAMA, BIDEN = PORTRAITS / "Barack_Obama", PORTRAITS / "Joe_Biden"
JOLIE, DORSEY = PORTRAITS / "Angelina_Jolie", PORTRAITS / "Jack_Dorsey"


def photo(path: Path) -> dict:
    return {"image": (path.name, path.read_bytes(), "application/octet-stream")}


def new_collection(client: TestClient, prefix: str = "c") -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    response = client.post("/collections", json={"name": name})
    assert response.status_code == 201, response.text
    assert response.json()["name"] == name and response.json()["people"] == 0
    return name


def register(client: TestClient, collection: str, name: str, path: Path, **params: object) -> dict:
    response = client.post(
        "/register", params={"collection": collection, **params}, data={"name": name}, files=photo(path)
    )
    assert response.status_code == 201, response.text
    return response.json()


def recognize(client: TestClient, collection: str, path: Path, **params: object) -> dict:
    response = client.post("/recognize", params={"collection": collection, **params}, files=photo(path))
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def collection(client: TestClient) -> Iterator[str]:
    name = new_collection(client)
    yield name
    client.delete(f"/collections/{name}")


# --- isolation -----------------------------------------------------------------------------------


def test_a_collection_never_names_someone_enrolled_in_another(client: TestClient) -> None:
    site_a, site_b = new_collection(client, "site-a"), new_collection(client, "site-b")
    try:
        obama = register(client, site_a, "Barack Obama", OBAMA / "fr_obama.jpg")
        found = recognize(client, site_a, OBAMA / "fr_obama2.jpg")
        assert found["matched_user"] == {"id": obama["user_id"], "name": "Barack Obama"}
        elsewhere = recognize(client, site_b, OBAMA / "fr_obama2.jpg")
        assert elsewhere["matched_user"] is None and elsewhere["gallery_size"] == 0
        assert elsewhere["message"] == "the gallery is empty"
        assert client.get("/users", params={"collection": site_b}).json()["total"] == 0
        assert client.get(f"/users/{obama['user_id']}", params={"collection": site_b}).status_code == 404
        stats = {c: client.get("/stats", params={"collection": c}).json() for c in (site_a, site_b)}
        assert (stats[site_a]["total_users"], stats[site_b]["total_users"]) == (1, 0)
        listed = {c["name"]: c for c in client.get("/collections").json()["collections"]}
        assert (listed[site_a]["people"], listed[site_a]["faces"], listed[site_b]["people"]) == (1, 1, 0)
        frame = (OBAMA / "fr_obama2.jpg").read_bytes()
        for name, expected in ((site_a, "Barack Obama"), (site_b, None)):
            with client.websocket_connect(f"/ws/recognize?collection={name}", headers=_key()) as socket:
                socket.send_bytes(frame)
                answer = socket.receive_json()
            assert (answer["matched_user"] or {}).get("name") == expected
        # The same name may be registered in two collections.
        register(client, site_b, "Barack Obama", OBAMA / "fr_obama3.jpg")
    finally:
        client.delete(f"/collections/{site_a}")
        client.delete(f"/collections/{site_b}")
    assert recognize_status(client, site_a) == 404  # deleted with everyone in it


def recognize_status(client: TestClient, collection: str) -> int:
    response = client.post(
        "/recognize", params={"collection": collection}, files=photo(OBAMA / "fr_obama.jpg")
    )
    return response.status_code


def _key(key: str = API_KEY) -> dict[str, str]:
    return {"X-API-Key": key}


def test_an_unknown_collection_is_404_before_any_work(client: TestClient) -> None:
    for method, path in [("post", "/recognize"), ("get", "/users"), ("get", "/stats"), ("post", "/register")]:
        kwargs: dict = {"params": {"collection": "no-such-collection"}}
        if method == "post":
            kwargs |= {"files": photo(OBAMA / "fr_obama.jpg"), "data": {"name": "Nobody"}}
        response = getattr(client, method)(path, **kwargs)
        assert response.status_code == 404, (path, response.text)
        assert "no-such-collection" in response.json()["detail"]
    with client.websocket_connect("/ws/recognize?collection=no-such-collection", headers=_key()) as socket:
        refusal = socket.receive_json()
    assert refusal["status"] == 404 and "no-such-collection" in refusal["error"]


def test_collections_are_created_once_validated_and_default_stays(
    client: TestClient, collection: str
) -> None:
    assert client.post("/collections", json={"name": collection}).status_code == 409
    assert client.post("/collections", json={"name": "no spaces"}).status_code == 422
    assert client.post("/collections", json={"name": "-dash-first"}).status_code == 422
    assert client.delete(f"/collections/{DEFAULT_COLLECTION}").status_code == 409
    assert client.delete("/collections/never-made").status_code == 404
    names = [c["name"] for c in client.get("/collections").json()["collections"]]
    assert DEFAULT_COLLECTION in names and collection in names and names == sorted(names)


# --- keys bound to collections ---------------------------------------------------------------------

BOUND = {"door-a": "door-a-key", "admin-b": "admin-b-key", "everywhere": "everywhere-key"}


@pytest.fixture(scope="module")
def bound(pg_server: EmbeddedServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """An app whose keys are bound: door-a (recognize) to site-a, admin-b (admin) to site-b and lobby,
    everywhere (recognize) to all."""
    keys = (
        f"door-a:recognize:{BOUND['door-a']}:site-a,admin-b:admin:{BOUND['admin-b']}:site-b|lobby,"
        f"everywhere:recognize:{BOUND['everywhere']}:*"
    )
    settings = app_settings(pg_server, tmp_path_factory.mktemp("facegate-bound"), facegate_api_keys=keys)
    for client in running_app(settings):
        for name in ("site-a", "site-b"):
            assert client.post("/collections", json={"name": name}, headers=_key()).status_code == 201
        yield client


@pytest.mark.parametrize(
    ("key", "collection", "expected"),
    [
        ("door-a", "site-a", 200),
        ("door-a", "site-b", 403),
        ("door-a", DEFAULT_COLLECTION, 403),
        ("door-a", "unknown", 403),  # a bound key learns nothing of collections it is not bound to
        ("everywhere", "site-b", 200),
        ("everywhere", DEFAULT_COLLECTION, 200),
        ("everywhere", "unknown", 404),
        ("admin-b", "site-b", 200),
        ("admin-b", "site-a", 403),
    ],
)
def test_a_key_opens_only_its_collections(
    bound: TestClient, key: str, collection: str, expected: int
) -> None:
    response = bound.post(
        "/recognize",
        params={"collection": collection},
        files=photo(OBAMA / "fr_obama.jpg"),
        headers=_key(BOUND[key]),
    )
    assert response.status_code == expected, response.text
    if expected == 403:
        assert f"'{key}'" in response.json()["detail"] and collection in response.json()["detail"]


def test_a_bound_admin_key_manages_only_its_collections(bound: TestClient) -> None:
    headers = _key(BOUND["admin-b"])
    assert bound.get("/users", params={"collection": "site-b"}, headers=headers).status_code == 200
    assert bound.get("/users", params={"collection": "site-a"}, headers=headers).status_code == 403
    assert [c["name"] for c in bound.get("/collections", headers=headers).json()["collections"]] == ["site-b"]
    assert bound.post("/collections", json={"name": "site-c"}, headers=headers).status_code == 403
    assert bound.delete("/collections/site-a", headers=headers).status_code == 403
    created = bound.post("/collections", json={"name": "lobby"}, headers=headers)
    assert created.status_code == 201
    assert bound.delete("/collections/lobby", headers=headers).status_code == 200


def test_a_bound_key_cannot_stream_another_collection(bound: TestClient) -> None:
    path = "/ws/recognize?collection=site-b"
    with bound.websocket_connect(path, headers=_key(BOUND["door-a"])) as socket:
        refusal = socket.receive_json()
    assert refusal["status"] == 403 and "site-b" in refusal["error"]
    with bound.websocket_connect("/ws/liveness?collection=site-b", headers=_key(BOUND["door-a"])) as socket:
        assert socket.receive_json()["status"] == 403


def test_metrics_are_only_for_keys_of_every_collection(bound: TestClient) -> None:
    """/metrics counts every tenant's people and requests: a bound key would see the others move."""
    refused = bound.get("/metrics", headers=_key(BOUND["door-a"]))
    assert refused.status_code == 403 and "'door-a'" in refused.json()["detail"]
    assert bound.get("/metrics", headers=_key(BOUND["everywhere"])).status_code == 200


@pytest.mark.parametrize("name", ["\x00", "site-a\x00", "site a", "-x", "a" * 5000])
def test_a_bad_collection_name_is_refused_wherever_it_enters(bound: TestClient, name: str) -> None:
    for key in (API_KEY, BOUND["admin-b"]):  # a key of every collection, and one bound to some
        for response in (
            bound.get("/stats", params={"collection": name}, headers=_key(key)),
            bound.delete(f"/collections/{quote(name, safe='')}", headers=_key(key)),
            bound.post("/collections", json={"name": name}, headers=_key(key)),
        ):
            assert response.status_code == 422, response.text
        for path in ("/ws/recognize", "/ws/liveness"):
            query = urlencode({"collection": name})
            with bound.websocket_connect(f"{path}?{query}", headers=_key(key)) as socket:
                error = socket.receive_json()
                with pytest.raises(WebSocketDisconnect) as closed:
                    socket.receive_json()
            assert (error["status"], closed.value.code) == (422, 1008), error
            assert "invalid collection name" in error["error"] and len(error["error"]) < 300


# --- top-K candidates --------------------------------------------------------------------------


def test_top_k_lists_distinct_people_nearest_first(client: TestClient, collection: str) -> None:
    ids = {
        register(client, collection, name, path)["user_id"]: name
        for name, path in [
            ("Barack Obama", OBAMA / "fr_obama.jpg"),
            ("Joe Biden", BIDEN / "fr_biden.jpg"),
            ("Angelina Jolie", JOLIE / "deepface_img1.jpg"),
        ]
    }
    obama_id = next(i for i, n in ids.items() if n == "Barack Obama")
    # A second photo of Obama: he must still count once.
    assert (
        client.post(
            f"/users/{obama_id}/faces",
            params={"collection": collection},
            files=photo(OBAMA / "fr_obama3.jpg"),
        ).status_code
        == 201
    )
    face = recognize(client, collection, OBAMA / "fr_obama2.jpg", top_k=5)["faces"][0]
    candidates = face["candidates"]
    assert [c["user"]["id"] for c in candidates][:1] == [obama_id] == [face["matched_user"]["id"]]
    assert sorted(c["user"]["id"] for c in candidates) == sorted(ids)  # three people, each once
    distances = [c["distance"] for c in candidates]
    assert distances == sorted(distances) and candidates[0]["distance"] == face["distance"]
    assert all(0 <= c["similarity"] <= 1 for c in candidates)
    assert len(recognize(client, collection, OBAMA / "fr_obama2.jpg")["faces"][0]["candidates"]) == 1
    assert (
        client.post("/recognize", params={"top_k": 21}, files=photo(OBAMA / "fr_obama2.jpg")).status_code
        == 422
    )


# --- identity guards -------------------------------------------------------------------------


def _faces(client: TestClient, collection: str, user_id: int) -> list[dict]:
    response = client.get(f"/users/{user_id}/faces", params={"collection": collection})
    assert response.status_code == 200, response.text
    return response.json()["faces"]


def test_a_photo_of_someone_else_is_not_added_unless_forced(client: TestClient, collection: str) -> None:
    obama = register(client, collection, "Barack Obama", OBAMA / "fr_obama.jpg")["user_id"]
    path = f"/users/{obama}/faces"
    refused = client.post(path, params={"collection": collection}, files=photo(BIDEN / "fr_biden.jpg"))
    assert refused.status_code == 422 and "does not look like Barack Obama" in refused.json()["detail"]
    assert len(_faces(client, collection, obama)) == 1  # nothing stored
    genuine = client.post(path, params={"collection": collection}, files=photo(OBAMA / "fr_obama2.jpg"))
    assert genuine.status_code == 201 and genuine.json()["face_count"] == 2
    forced = client.post(
        path, params={"collection": collection, "force": "true"}, files=photo(BIDEN / "fr_biden.jpg")
    )
    assert forced.status_code == 201 and forced.json()["face_count"] == 3


def test_a_face_already_enrolled_is_not_registered_again_unless_allowed(
    client: TestClient, collection: str
) -> None:
    first = register(client, collection, "Barack Obama", OBAMA / "fr_obama.jpg")["user_id"]
    again = client.post(
        "/register",
        params={"collection": collection},
        data={"name": "B. Obama"},
        files=photo(OBAMA / "fr_obama2.jpg"),
    )
    assert again.status_code == 409
    assert "Barack Obama" in again.json()["detail"] and f"user {first}" in again.json()["detail"]
    assert client.get("/users", params={"collection": collection}).json()["total"] == 1  # nothing stored
    register(client, collection, "Joe Biden", BIDEN / "fr_biden.jpg")  # a new person passes
    register(client, collection, "B. Obama", OBAMA / "fr_obama2.jpg", allow_duplicate="true")
    assert client.get("/users", params={"collection": collection}).json()["total"] == 3


# --- single photos and renames --------------------------------------------------------------------


def test_single_photos_are_listed_and_deleted_but_never_the_last(client: TestClient, collection: str) -> None:
    user = register(client, collection, "Jack Dorsey", DORSEY / "deepface_img16.jpg")["user_id"]
    added = client.post(
        f"/users/{user}/faces", params={"collection": collection}, files=photo(DORSEY / "deepface_img17.jpg")
    )
    assert added.status_code == 201, added.text
    faces = _faces(client, collection, user)
    assert [f["id"] for f in faces] == sorted(f["id"] for f in faces) and len(faces) == 2
    assert all(f["box_width"] > 20 and f["box_height"] > 20 and f["model"] for f in faces)
    params = {"collection": collection}
    deleted = client.delete(f"/users/{user}/faces/{faces[1]['id']}", params=params)
    assert deleted.status_code == 200 and deleted.json()["face_count"] == 1
    assert client.delete(f"/users/{user}/faces/{faces[1]['id']}", params=params).status_code == 404
    last = client.delete(f"/users/{user}/faces/{faces[0]['id']}", params=params)
    assert last.status_code == 409 and [f["id"] for f in _faces(client, collection, user)] == [faces[0]["id"]]
    assert client.get(f"/users/{user}/faces", params={"collection": DEFAULT_COLLECTION}).status_code == 404


def test_a_person_is_renamed_under_the_name_rules(client: TestClient, collection: str) -> None:
    user = register(client, collection, "Jack Dorsey", DORSEY / "deepface_img16.jpg")["user_id"]
    register(client, collection, "Joe Biden", BIDEN / "fr_biden.jpg")
    params = {"collection": collection}
    renamed = client.patch(f"/users/{user}", params=params, json={"name": "  Jack\u0020Dorsey Jr. "})
    assert renamed.status_code == 200 and renamed.json()["name"] == "Jack Dorsey Jr."
    assert client.patch(f"/users/{user}", params=params, json={"name": "Joe Biden"}).status_code == 409
    assert client.patch(f"/users/{user}", params=params, json={"name": "\u0000"}).status_code == 422
    assert client.get(f"/users/{user}", params=params).json()["name"] == "Jack Dorsey Jr."


# --- export and import ---------------------------------------------------------------------------


def facegate(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "facegate", *args],
        env=env, capture_output=True, text=True, timeout=API_START_TIMEOUT,
    )  # fmt: skip


@pytest.mark.slow
def test_export_then_import_into_a_fresh_data_directory_recognises_the_same_people(
    tmp_path: Path, pgdata_dir: Path
) -> None:
    # Two data directories, each with its own embedded server.
    source = clean_env(APP_TOKEN="k", FACEGATE_DATA_DIR=str(pgdata_dir / "source"))
    people = tmp_path / "people"
    for name, path in [("Barack_Obama", OBAMA / "fr_obama.jpg"), ("Joe_Biden", BIDEN / "fr_biden.jpg")]:
        (people / name).mkdir(parents=True)
        (people / name / path.name).write_bytes(path.read_bytes())
    assert facegate(source, "enroll", str(people)).returncode == 0
    exported = tmp_path / "gallery.facegate"
    done = facegate(source, "export", str(exported))
    assert done.returncode == 0, done.stderr
    assert "2 people" in done.stdout and "biometric" in done.stdout

    target = clean_env(APP_TOKEN="k", FACEGATE_DATA_DIR=str(pgdata_dir / "target"))
    for _ in range(2):  # twice: the second merges by name and adds no one
        imported = facegate(target, "import", str(exported), "--collection", "site-a")
        assert imported.returncode == 0, imported.stderr
    assert "0 people added, 2 already there" in imported.stdout
    seen = facegate(target, "recognize", "--collection", "site-a", str(OBAMA / "fr_obama2.jpg"))
    assert seen.returncode == 0 and "] Barack Obama (distance" in seen.stdout, seen.stdout + seen.stderr
    damaged = tmp_path / "damaged.facegate"
    data = bytearray(exported.read_bytes())
    data[len(data) // 2] ^= 1
    damaged.write_bytes(bytes(data))
    refused = facegate(target, "import", str(damaged))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr and refused.stderr.strip()


def test_the_cli_default_collection_is_the_gallery_s() -> None:
    from facegate.cli import _DEFAULT_COLLECTION

    assert _DEFAULT_COLLECTION == DEFAULT_COLLECTION
