"""API keys and their scopes.

`APP_TOKEN` is the admin key. `FACEGATE_API_KEYS` adds keys of narrower scope as
`name:scope:key,...`. Keys are kept only as SHA-256 digests in memory and compared in constant
time; a key's name, never the key, identifies it in logs and metrics.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

from fastapi import Depends, HTTPException, Request, params, status
from fastapi.security import APIKeyHeader

from facegate.api.ratelimit import retry_after


class Scope(StrEnum):
    DETECT = "detect"
    RECOGNIZE = "recognize"
    ADMIN = "admin"


# What each scope may call: a wider scope includes the narrower ones.
GRANTS: dict[Scope, frozenset[Scope]] = {
    Scope.DETECT: frozenset({Scope.DETECT}),
    Scope.RECOGNIZE: frozenset({Scope.DETECT, Scope.RECOGNIZE}),
    Scope.ADMIN: frozenset(Scope),
}


@dataclass(frozen=True, slots=True)
class ApiKey:
    name: str
    scope: Scope
    digest: bytes

    def allows(self, needed: Scope) -> bool:
        return needed in GRANTS[self.scope]


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
        """The admin key plus `name:scope:key` entries separated by commas."""
        keys = [ApiKey("admin", Scope.ADMIN, _digest(admin_key))]
        for entry in filter(None, (part.strip() for part in extra.split(","))):
            name, scope, key = _split_entry(entry)
            keys.append(ApiKey(name, scope, _digest(key)))
        return cls(keys)

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


def _split_entry(entry: str) -> tuple[str, Scope, str]:
    parts = entry.split(":", 2)
    if len(parts) != 3 or not all(parts):
        raise ValueError("FACEGATE_API_KEYS entries look like name:scope:key")
    name, scope, key = parts
    try:
        return name, Scope(scope), key
    except ValueError:
        raise ValueError(
            f"unknown scope {scope!r} for key {name!r}; use detect, recognize or admin"
        ) from None


_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The service's API key")


def authenticate(request: Request, presented: str | None) -> ApiKey:
    """The caller's key, or 401; 429 when it is over its rate. Records the key's name for logs."""
    key = request.app.state.services.keys.identify(presented)
    if key is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="missing or wrong API key: send it in the X-API-Key header",
            headers={"WWW-Authenticate": "API-Key"},
        )
    request.state.key_name = key.name
    _rate_limit(request, key)
    return key


def _rate_limit(request: Request, key: ApiKey) -> None:
    """429 with `Retry-After` once `key` has used up its rate (every authenticated request counts)."""
    wait = request.app.state.services.rate_limiter.acquire(key.name)
    if wait > 0:
        seconds = retry_after(wait)
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail=f"the key '{key.name}' is over its rate limit; retry in {seconds} s",
            headers={"Retry-After": seconds},
        )


def require(scope: Scope) -> params.Depends:
    """A route dependency: a valid key (401 otherwise) whose scope covers `scope` (403 otherwise)."""

    def check(request: Request, presented: Annotated[str | None, Depends(_api_key_header)]) -> ApiKey:
        key = authenticate(request, presented)
        if not key.allows(scope):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=f"the key '{key.name}' has scope '{key.scope}'; this needs '{scope}'",
            )
        return key

    return Depends(check)
