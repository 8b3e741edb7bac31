"""API keys and their scopes.

`APP_TOKEN` is the admin key. `FACEGATE_API_KEYS` adds keys of narrower scope as
`name:scope:key[:collections],...`, optionally bound to some collections (`a|b`; `*` or no fourth
field = every collection). Keys are kept only as SHA-256 digests in memory and compared in constant
time; a key's name, never the key, identifies it in logs and metrics.

A configuration that could open more than its author meant is refused at start-up rather than read
in its widest sense: an empty fourth field (an unset template variable, say), the same key value
twice (or equal to APP_TOKEN: which entry would win?), whitespace in a key, a binding to a name that
cannot be a collection.

`authorize` is the one rule for a presented key (401, 403, then 429 for its rate), for HTTP
(`require`, with the `WWW-Authenticate` and `Retry-After` headers) and the streams alike
(`facegate.api.streaming`, close code 1008 or 1013).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

from fastapi import Depends, HTTPException, Request, params, status
from fastapi.security import APIKeyHeader

from facegate.api.ratelimit import Limiter, retry_after
from facegate.gallery import InvalidCollectionNameError, check_collection_name


class Scope(StrEnum):
    DETECT = "detect"
    RECOGNIZE = "recognize"
    ADMIN = "admin"
    AUDIT = "audit"  # reading the access log (GET /events): who was let in, who was turned away


# What each scope may call: a wider scope includes the narrower ones.
GRANTS: dict[Scope, frozenset[Scope]] = {
    Scope.DETECT: frozenset({Scope.DETECT}),
    Scope.RECOGNIZE: frozenset({Scope.DETECT, Scope.RECOGNIZE}),
    Scope.ADMIN: frozenset(Scope),
    Scope.AUDIT: frozenset({Scope.AUDIT}),
}


@dataclass(frozen=True, slots=True)
class ApiKey:
    name: str
    scope: Scope
    digest: bytes
    collections: frozenset[str] | None = None  # None: every collection

    def allows(self, needed: Scope) -> bool:
        return needed in GRANTS[self.scope]

    def opens(self, collection: str) -> bool:
        return self.collections is None or collection in self.collections


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class KeyRing:
    """The keys the service accepts."""

    def __init__(self, keys: list[ApiKey]) -> None:
        if not keys:
            raise ValueError("no API key configured")
        self._keys = keys

    @classmethod
    def parse(cls, admin_key: str, extra: str = "") -> KeyRing:
        """The admin key plus `name:scope:key[:collections]` entries separated by commas."""
        keys = [ApiKey("admin", Scope.ADMIN, _digest(admin_key))]
        keys += [_parse_entry(entry) for entry in filter(None, (part.strip() for part in extra.split(",")))]
        names = [key.name for key in keys]
        if len(set(names)) != len(names):
            raise ValueError("FACEGATE_API_KEYS: each key needs its own name ('admin' is APP_TOKEN's)")
        if len({key.digest for key in keys}) != len(keys):
            raise ValueError("FACEGATE_API_KEYS: the same key value twice, or a key equal to APP_TOKEN")
        return cls(keys)

    def named(self, name: str) -> ApiKey | None:
        """The key called `name` (a ticket names the key it was issued to)."""
        return next((key for key in self._keys if key.name == name), None)

    def identify(self, presented: str | None) -> ApiKey | None:
        """The key matching `presented`, checking every key so the time taken reveals nothing."""
        if not presented:
            return None
        digest = _digest(presented)
        found = None
        for key in self._keys:
            if hmac.compare_digest(digest, key.digest):
                found = key
        return found


def _parse_entry(entry: str) -> ApiKey:
    parts = entry.split(":", 3)
    if len(parts) < 3 or not all(parts[:3]):
        raise ValueError("FACEGATE_API_KEYS entries look like name:scope:key or name:scope:key:collections")
    name, scope, key = parts[:3]
    if scope not in set(Scope):
        raise ValueError(f"unknown scope {scope!r} for key {name!r}; use one of {', '.join(Scope)}")
    if any(char.isspace() for char in key):
        raise ValueError(f"key {name!r}: whitespace in the key (a client could not send it as is)")
    return ApiKey(name, Scope(scope), _digest(key), _collections(name, parts[3] if len(parts) > 3 else "*"))


def _collections(name: str, field: str) -> frozenset[str] | None:
    if field.strip() == "*":
        return None
    if not field.strip():
        raise ValueError(f"key {name!r}: an empty binding after the key (write * for every collection)")
    collections = [part.strip() for part in field.split("|")]
    if not all(collections):
        raise ValueError(f"key {name!r}: an empty collection name in {field!r} (separate them with |)")
    try:
        return frozenset(check_collection_name(collection) for collection in collections)
    except InvalidCollectionNameError as exc:
        raise ValueError(f"key {name!r}: {exc}") from None


def admit(key: ApiKey, collection: str) -> None:
    """403 unless `key` is bound to `collection` (or to every collection). Every collection name a
    client sends (query, path, body, stream) passes here first, so here it is checked against the
    naming rule: InvalidCollectionNameError (422), which says nothing of other collections."""
    check_collection_name(collection)
    if not key.opens(collection):
        raise Refused(
            status.HTTP_403_FORBIDDEN,
            f"the key '{key.name}' is not bound to the collection '{collection}'",
            holder=key.name,
        )


def admit_everywhere(key: ApiKey, what: str) -> None:
    """403 unless `key` opens every collection: `what` covers them all (and the metrics of requests
    cannot be told apart by collection), so a bound key would learn of the others."""
    if key.collections is not None:
        raise Refused(
            status.HTTP_403_FORBIDDEN,
            f"the key '{key.name}' is bound to some collections; {what} covers every collection",
            holder=key.name,
        )


class Refused(Exception):
    """A caller that may not go on: the answer's `status` and `detail`, `retry_after` (an HTTP
    `Retry-After` value) with a 429, and `holder`, the name of the key when it was recognised."""

    def __init__(
        self, status: int, detail: str, *, holder: str | None = None, retry_after: str | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.holder = holder
        self.retry_after = retry_after


# How to send a key over HTTP; a stream's refusal says how to send it on a socket.
_HEADER_HINT = "send it in the X-API-Key header"


def authorize(
    keys: KeyRing, limiter: Limiter, presented: str | None, scope: Scope, *, hint: str = _HEADER_HINT
) -> ApiKey:
    """The presented key, when it is one of `keys` (401 otherwise, with `hint` on how to send one) and
    covers `scope` (403), counted as one request of its rate (429). A refused request costs nothing."""
    key = keys.identify(presented)
    if key is None:
        raise Refused(status.HTTP_401_UNAUTHORIZED, f"missing or wrong API key: {hint}")
    if not key.allows(scope):
        detail = f"the key '{key.name}' has scope '{key.scope}'; this needs '{scope}'"
        raise Refused(status.HTTP_403_FORBIDDEN, detail, holder=key.name)
    charge(limiter, key.name)
    return key


def charge(limiter: Limiter, holder: str) -> None:
    """Count one request against the rate of the key named `holder`: 429 once it is used up."""
    if (wait := limiter.acquire(holder)) > 0:
        seconds = retry_after(wait)
        raise Refused(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"the key '{holder}' is over its rate limit; retry in {seconds} s",
            holder=holder,
            retry_after=seconds,
        )


_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The service's API key")


def require(scope: Scope) -> params.Depends:
    """A route dependency: `authorize` for `scope`, its refusal answered with the HTTP headers that go
    with it. Records the key's name for logs."""

    # Sync, so FastAPI runs it in a worker thread: the shared rate limiter asks the database.
    def check(request: Request, presented: Annotated[str | None, Depends(_api_key_header)]) -> ApiKey:
        services = request.app.state.services
        try:
            key = authorize(services.keys, services.rate_limiter, presented, scope)
        except Refused as refused:
            if refused.holder is not None:
                request.state.key_name = refused.holder
            raise http_error(refused) from None
        request.state.key_name = key.name
        request.state.api_key = key  # for the checks that follow: the collection's binding
        return key

    return Depends(check)


def http_error(refused: Refused) -> HTTPException:
    """A refusal as HTTP answers it, with the headers that go with it."""
    headers = {"WWW-Authenticate": "API-Key"} if refused.status == status.HTTP_401_UNAUTHORIZED else {}
    if refused.retry_after is not None:
        headers["Retry-After"] = refused.retry_after
    return HTTPException(refused.status, detail=refused.detail, headers=headers or None)
