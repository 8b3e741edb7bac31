"""Logs: the access log's fields, and nothing secret in any record."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from tests.data import FACES
from tests.support import API_KEY, SCOPED_KEYS, scoped_headers, unique, upload

BIDEN = FACES / "portraits" / "Joe_Biden"


def test_logs_carry_the_request_id_and_never_keys_or_names(
    secured: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    name = unique("Secret Person")
    with caplog.at_level(logging.DEBUG):
        registered = secured.post(
            "/register",
            headers={**scoped_headers("admin"), "X-Request-ID": "trace-42"},
            data={"name": name},
            files=upload(BIDEN / "fr_biden.jpg", "image"),
        )
        secured.post(
            "/recognize", headers=scoped_headers("recognize"), files=upload(BIDEN / "fr_biden2.jpg", "image")
        )
        secured.post("/register", headers={"X-API-Key": "guessed-" + API_KEY})
    assert registered.status_code == 201, registered.text
    access = [r.getMessage() for r in caplog.records if r.name == "facegate.access"]
    assert any(
        "route=/register status=201" in m and "key=admin-client request_id=trace-42" in m for m in access
    )
    text = caplog.text + "".join(str(vars(record)) for record in caplog.records)
    for secret in [name, API_KEY, *SCOPED_KEYS.values()]:
        assert secret not in text
    secured.delete(f"/users/{registered.json()['user_id']}", headers=scoped_headers("admin"))
