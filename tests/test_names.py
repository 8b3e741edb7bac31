"""Strict parsing of what identifies a person: user ids, and names (one rule for the API and the CLI)."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from facegate.config import Settings
from facegate.enroll import enroll_folder
from facegate.gallery import EmbeddedServer
from facegate.names import InvalidNameError, clean_name, name_skeleton
from tests.data import FACES
from tests.support import create_database

OBAMA = FACES / "portraits" / "Barack_Obama" / "fr_obama_small.jpg"
BIDEN = FACES / "portraits" / "Joe_Biden" / "fr_biden.jpg"
PERSIAN_ZWNJ = "علی\u200cرضا"  # Alireza, with the half-space (ZWNJ) Persian writes inside it
DEVANAGARI_ZWJ = "क्\u200dष"  # a half-form conjunct: ZWJ after the virama


def tag() -> str:
    return uuid.uuid4().hex[:8]


def register(client: TestClient, name: str, photo: Path = OBAMA):
    return client.post("/register", data={"name": name}, files={"image": (photo.name, photo.read_bytes())})


# --- the name rule -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [PERSIAN_ZWNJ, "می\u200cخواهم", "علی\u200dرضا", DEVANAGARI_ZWJ])
def test_joiners_are_allowed_where_unicode_gives_them_a_meaning(name: str) -> None:
    assert clean_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["a\u200cb", "\u200cعلی", "علی\u200c", "Al\u200dice", "ab\u200b", "\ufeffAlice", "x\u2060y"],
)
def test_joiners_and_other_invisibles_are_refused_elsewhere(name: str) -> None:
    with pytest.raises(InvalidNameError, match="invisible"):
        clean_name(name)


def test_look_alikes_share_a_skeleton_and_different_names_do_not() -> None:
    assert name_skeleton("Alice") == name_skeleton("\u0410lice")  # Cyrillic А
    assert name_skeleton("John Smith") == name_skeleton("John\u00a0Smith")  # a non-breaking space
    for look_alike in ("Amy  Adams", "Amy\u3000Adams", "\uff21\uff4d\uff59 \uff21\uff44\uff41\uff4d\uff53"):
        assert name_skeleton("Amy Adams") == name_skeleton(look_alike), look_alike  # spaces, full width
    assert name_skeleton("Alice") != name_skeleton("Alicia")


# --- names over the API --------------------------------------------------------------------------


def multipart_with_raw_name(name: bytes, photo: Path) -> tuple[bytes, dict[str, str]]:
    """A /register body whose name field holds exactly these bytes (a client cannot send them as str)."""
    body = (
        b'--b\r\nContent-Disposition: form-data; name="name"\r\n\r\n' + name + b"\r\n"
        b'--b\r\nContent-Disposition: form-data; name="image"; filename="p.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + photo.read_bytes() + b"\r\n--b--\r\n"
    )
    return body, {"Content-Type": "multipart/form-data; boundary=b"}


def test_a_name_that_is_not_utf8_is_422_not_mojibake(client: TestClient) -> None:
    body, headers = multipart_with_raw_name(b"Jos\xe9 " + tag().encode(), OBAMA)  # Latin-1 é
    response = client.post("/register", content=body, headers=headers)
    assert response.status_code == 422
    assert "UTF-8" in response.json()["detail"]


def test_a_utf8_name_with_accents_is_stored_as_sent(client: TestClient) -> None:
    name = f"José {tag()}"
    body, headers = multipart_with_raw_name(name.encode(), OBAMA)
    response = client.post("/register", content=body, headers=headers)
    assert response.status_code == 201 and response.json()["name"] == name
    client.delete(f"/users/{response.json()['user_id']}")


@pytest.mark.parametrize(
    "disguise",
    [
        "\u0410lice {}",
        "Alice\u00a0{}",
        "Alice {}\u00a0",
        "Alice  {}",
        "Alice\u3000{}",
        "\uff21\uff4c\uff49\uff43\uff45 {}",
    ],
)
def test_a_look_alike_of_a_registered_name_is_409_naming_them(client: TestClient, disguise: str) -> None:
    suffix = tag()
    first = register(client, f"Alice {suffix}")
    assert first.status_code == 201
    try:
        response = register(client, disguise.format(suffix), BIDEN)
        if disguise.endswith("\u00a0"):  # trailing spaces are trimmed: the very same name
            assert response.status_code == 409 and "already registered" in response.json()["detail"]
            return
        assert response.status_code == 409
        detail = response.json()["detail"]
        assert f"'Alice {suffix}'" in detail and f"user {first.json()['user_id']}" in detail
    finally:
        client.delete(f"/users/{first.json()['user_id']}")


def test_a_persian_name_with_its_half_space_registers(client: TestClient) -> None:
    name = f"{PERSIAN_ZWNJ} {tag()}"
    response = register(client, name)
    assert response.status_code == 201 and response.json()["name"] == name
    client.delete(f"/users/{response.json()['user_id']}")


# --- user ids ------------------------------------------------------------------------------------


@pytest.mark.parametrize("template", ["{}.0", "0{}", "+{}", "{}e0", "{}_0", " {}", "{}\u0661", "0x{}"])
def test_user_ids_are_plain_positive_integers(client: TestClient, template: str) -> None:
    created = register(client, f"Id Parsing {tag()}")
    user_id = created.json()["user_id"]
    try:
        variant = template.format(user_id)
        # The same rule for every id in a path: people, faces, visitors and events.
        paths = [
            ("GET", "/users/{}"),
            ("DELETE", "/users/{}"),
            ("POST", "/users/{}/faces"),
            ("DELETE", f"/users/{user_id}/faces/{{}}"),
            ("POST", "/visitors/1/add-to/{}"),
            ("DELETE", "/visitors/{}"),
            ("GET", "/events/{}/face"),
        ]
        for method, path in paths:
            files = {"image": (OBAMA.name, OBAMA.read_bytes())} if path.endswith("/faces") else None
            response = client.request(method, path.format(variant), files=files)
            assert response.status_code == 422, (method, variant, response.text)
            assert "plain positive integer" in response.text
        assert client.get(f"/users/{user_id}").json()["face_count"] == 1  # untouched
    finally:
        client.delete(f"/users/{user_id}")


@pytest.mark.parametrize("variant", ["0", "-1", str(2**63)])
def test_ids_out_of_range_are_422(client: TestClient, variant: str) -> None:
    assert client.get(f"/users/{variant}").status_code == 422


# --- the CLI's enrolment follows the same rule ---------------------------------------------------


def test_enroll_applies_the_api_name_rule(pg_server: EmbeddedServer, tmp_path: Path) -> None:
    suffix = tag()
    people = {
        f"Barack_Obama_{suffix}": OBAMA,
        f"B\u0430rack_Obama_{suffix}": BIDEN,  # Cyrillic а: a look-alike of the first
        f"bidi\u202ename_{suffix}": BIDEN,  # an invisible character
        f"{PERSIAN_ZWNJ}_{suffix}": BIDEN,
    }
    for folder, photo in people.items():
        (tmp_path / "people" / folder).mkdir(parents=True)
        shutil.copy(photo, tmp_path / "people" / folder / photo.name)
    dsn = create_database(pg_server)
    settings = Settings(database_url=dsn, facegate_data_dir=tmp_path / "data", _env_file=None)
    assert enroll_folder(tmp_path / "people", settings) == 0
    with psycopg.connect(dsn) as conn:
        names = {name for (name,) in conn.execute("SELECT name FROM users")}
    assert names == {f"Barack Obama {suffix}", f"{PERSIAN_ZWNJ} {suffix}"}
