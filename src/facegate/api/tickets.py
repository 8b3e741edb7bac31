"""Short-lived stream tickets: what a browser presents instead of an API key.

A page in the browser must not hold the UI's key (it may be the admin key), yet a WebSocket from
the browser needs a credential. The UI asks `POST /liveness/tickets` for a ticket with its own key
and hands only the ticket to the page. A ticket is `<payload>.<signature>`, both base64url without
padding: the payload is JSON naming what it grants (one endpoint), its expiry (Unix seconds), the
name of the key it was issued to (for logs and that key's rate limit) and a random nonce; the
signature is HMAC-SHA256 over the payload with a key derived from the admin key. Every worker
derives the same key, so any of them verifies a ticket without shared state; changing the admin key
invalidates every ticket. A ticket is not single-use: it opens its endpoint until it expires.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

# Long enough for a page to open its socket right after the user presses Start; short enough that
# a ticket copied out of a page is of little use.
TICKET_TTL_S = 60
# The only grant so far: opening the liveness socket.
LIVENESS_GRANT = "/ws/liveness"
# Bigger than any ticket this module issues: a longer one is refused before any decoding.
_MAX_TICKET_CHARS = 1024
# Domain separation: the derived key signs tickets only, and the admin key itself is not kept.
_DERIVATION_LABEL = b"facegate stream ticket v1"


class TicketError(Exception):
    """A ticket that opens nothing: malformed, forged, expired or for another endpoint."""


@dataclass(frozen=True, slots=True)
class Ticket:
    token: str
    expires_at: int


class TicketSigner:
    """Issues and verifies the tickets of one service (one admin key)."""

    def __init__(self, admin_key: str) -> None:
        self._key = hmac.new(admin_key.encode(), _DERIVATION_LABEL, hashlib.sha256).digest()

    def issue(self, grant: str, holder: str, now: float | None = None) -> Ticket:
        """A ticket granting `grant` to the key named `holder`, valid TICKET_TTL_S from `now`."""
        expires_at = int(now if now is not None else time.time()) + TICKET_TTL_S
        body = {"grant": grant, "exp": expires_at, "key": holder, "nonce": secrets.token_urlsafe(9)}
        payload = _encode(json.dumps(body, separators=(",", ":")).encode())
        return Ticket(f"{payload}.{self._sign(payload)}", expires_at)

    def verify(self, token: str, grant: str, now: float | None = None) -> str:
        """The name of the key the ticket was issued to; `TicketError` unless it grants `grant` now."""
        payload, signature = _split(token)
        # Bytes: compare_digest refuses str with non-ASCII characters, which a forged token may have.
        if not hmac.compare_digest(signature.encode(), self._sign(payload).encode()):
            raise TicketError("bad signature")
        body = _decode_body(payload)  # signed by us: well-formed unless the derivation key leaked
        if body.get("grant") != grant:
            raise TicketError(f"it grants {body.get('grant')!r}, not {grant!r}")
        if (now if now is not None else time.time()) > body["exp"]:
            raise TicketError("expired")
        return str(body["key"])

    def _sign(self, payload: str) -> str:
        return _encode(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())


def _split(token: str) -> tuple[str, str]:
    if len(token) > _MAX_TICKET_CHARS or token.count(".") != 1:
        raise TicketError("malformed")
    payload, signature = token.split(".")
    return payload, signature


def _decode_body(payload: str) -> dict[str, Any]:
    try:
        body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise TicketError("malformed") from exc
    if not isinstance(body, dict) or not isinstance(body.get("exp"), int):
        raise TicketError("malformed")
    return body


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
