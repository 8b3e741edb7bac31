"""Stream tickets: what a browser presents on `WS /ws/liveness` instead of an API key.

The signer on its own (expiry, tampering, another service's key, another grant), then the real app:
`POST /liveness/tickets` and the sockets that must, and must not, open with a ticket.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from facegate.api.tickets import LIVENESS_GRANT, TICKET_TTL_S, TicketError, TicketSigner
from tests.support import API_KEY, SCOPED_KEYS

POLICY_VIOLATION = 1008
NOW = 1_700_000_000.0


def flip_char(text: str, at: int) -> str:
    return text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1 :]


# --- the signer ----------------------------------------------------------------------------------


def test_a_ticket_names_its_holder_until_it_expires() -> None:
    signer = TicketSigner(API_KEY)
    ticket = signer.issue(LIVENESS_GRANT, "door", now=NOW)
    assert ticket.expires_at == int(NOW) + TICKET_TTL_S
    assert signer.verify(ticket.token, LIVENESS_GRANT, now=NOW + TICKET_TTL_S) == "door"
    with pytest.raises(TicketError, match="expired"):
        signer.verify(ticket.token, LIVENESS_GRANT, now=NOW + TICKET_TTL_S + 1)


def test_tickets_are_compact_url_safe_and_each_different() -> None:
    signer = TicketSigner(API_KEY)
    first, second = (signer.issue(LIVENESS_GRANT, "admin", now=NOW).token for _ in range(2))
    assert first != second  # a nonce: two Starts in one second still make two tickets
    assert len(first) < 200
    assert set(first) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    assert API_KEY not in first


@pytest.mark.parametrize("part", [0, 1], ids=["payload", "signature"])
def test_a_tampered_ticket_is_refused(part: int) -> None:
    signer = TicketSigner(API_KEY)
    parts = signer.issue(LIVENESS_GRANT, "admin", now=NOW).token.split(".")
    parts[part] = flip_char(parts[part], 5)
    with pytest.raises(TicketError, match="signature"):
        signer.verify(".".join(parts), LIVENESS_GRANT, now=NOW)


def test_a_ticket_whose_payload_says_another_expiry_is_refused() -> None:
    """Re-encoding a later expiry into the payload invalidates the signature."""
    signer = TicketSigner(API_KEY)
    payload, signature = signer.issue(LIVENESS_GRANT, "admin", now=NOW).token.split(".")
    body = json.loads(_b64decode(payload))
    body["exp"] += 3600
    forged = _b64encode(json.dumps(body, separators=(",", ":")).encode()) + "." + signature
    with pytest.raises(TicketError, match="signature"):
        signer.verify(forged, LIVENESS_GRANT, now=NOW)


def test_a_ticket_of_a_service_with_another_admin_key_is_refused() -> None:
    ticket = TicketSigner("another-admin-key").issue(LIVENESS_GRANT, "admin", now=NOW)
    with pytest.raises(TicketError, match="signature"):
        TicketSigner(API_KEY).verify(ticket.token, LIVENESS_GRANT, now=NOW)


def test_a_ticket_opens_only_its_own_grant() -> None:
    signer = TicketSigner(API_KEY)
    ticket = signer.issue(LIVENESS_GRANT, "admin", now=NOW)
    with pytest.raises(TicketError, match="grants"):
        signer.verify(ticket.token, "/ws/recognize", now=NOW)


@pytest.mark.parametrize("token", ["", "no-dot", "a.b.c", "x" * 2000 + ".y", "é.ü", "e30.e30"])
def test_malformed_tickets_are_refused(token: str) -> None:
    with pytest.raises(TicketError):
        TicketSigner(API_KEY).verify(token, LIVENESS_GRANT, now=NOW)


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# --- the API -------------------------------------------------------------------------------------


def issued(client: TestClient, scope: str = "recognize") -> dict[str, Any]:
    response = client.post("/liveness/tickets", headers={"X-API-Key": SCOPED_KEYS[scope]})
    assert response.status_code == 200, response.text
    return response.json()


def refusal(client: TestClient, path: str, first_message: dict[str, str]) -> tuple[dict[str, Any], int]:
    with client.websocket_connect(path) as socket:
        socket.send_text(json.dumps(first_message))
        error = socket.receive_json()
        with pytest.raises(WebSocketDisconnect) as closed:
            socket.receive_json()
    return error, closed.value.code


def test_tickets_need_a_key_with_the_recognize_scope(secured: TestClient) -> None:
    assert secured.post("/liveness/tickets").status_code == 401
    detect_only = secured.post("/liveness/tickets", headers={"X-API-Key": SCOPED_KEYS["detect"]})
    assert detect_only.status_code == 403 and "'recognize'" in detect_only.json()["detail"]
    before = time.time()
    body = issued(secured)
    assert before + TICKET_TTL_S - 1 <= body["expires_at"] <= time.time() + TICKET_TTL_S
    assert SCOPED_KEYS["recognize"] not in body["ticket"]


def test_a_ticket_opens_a_liveness_session(secured: TestClient) -> None:
    with secured.websocket_connect("/ws/liveness") as socket:
        socket.send_text(json.dumps({"ticket": issued(secured)["ticket"]}))
        opening = socket.receive_json()
    assert opening["type"] == "session" and opening["challenges"]


@pytest.mark.parametrize("path", ["/ws/recognize", "/ws/detect"])
def test_a_ticket_opens_no_other_stream(secured: TestClient, path: str) -> None:
    error, code = refusal(secured, path, {"ticket": issued(secured)["ticket"]})
    assert (error["status"], code) == (401, POLICY_VIOLATION)


@pytest.mark.parametrize(
    "ticket",
    [
        TicketSigner(API_KEY).issue(LIVENESS_GRANT, "admin", now=time.time() - 2 * TICKET_TTL_S).token,
        TicketSigner("another-admin-key").issue(LIVENESS_GRANT, "admin").token,
        TicketSigner(API_KEY).issue("/ws/recognize", "admin").token,
        "not-a-ticket",
        "\ud800.abc",  # JSON lets a lone surrogate through; it cannot be encoded
    ],
    ids=["expired", "another-service", "another-grant", "garbage", "lone-surrogate"],
)
def test_a_bad_ticket_is_refused_like_a_wrong_key(secured: TestClient, ticket: str) -> None:
    error, code = refusal(secured, "/ws/liveness", {"ticket": ticket})
    assert (error["status"], code) == (401, POLICY_VIOLATION)
    assert "API key" in error["error"] and "ticket" in error["error"]


def test_a_tampered_ticket_from_the_api_is_refused(secured: TestClient) -> None:
    payload, signature = issued(secured)["ticket"].split(".")
    error, code = refusal(secured, "/ws/liveness", {"ticket": f"{flip_char(payload, 3)}.{signature}"})
    assert (error["status"], code) == (401, POLICY_VIOLATION)


def test_an_api_key_still_opens_the_liveness_socket(secured: TestClient) -> None:
    with secured.websocket_connect("/ws/liveness") as socket:
        socket.send_text(json.dumps({"api_key": SCOPED_KEYS["recognize"]}))
        assert socket.receive_json()["type"] == "session"
