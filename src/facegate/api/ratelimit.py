"""Per-key rate limiting: one token bucket per API key name.

A bucket holds up to `burst` tokens and refills at `per_minute / 60` tokens a second; each request
takes one. A token bucket lets a client send a short burst (a UI page loading several things at
once) while holding its long-run rate to the configured one.

Two stores of the same buckets: `RateLimiter` in this process's memory, and `SharedRateLimiter` in
PostgreSQL (one row per key, read and written by one atomic statement), so that every worker and
replica on the gallery's database draws from the same bucket. `limiter_for` picks: the shared one
whenever another API process may use the same database.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

import psycopg

from facegate.config import Settings
from facegate.gallery import GalleryUnavailable

logger = logging.getLogger(__name__)


class Limiter(Protocol):
    def acquire(self, key_name: str) -> float:
        """Take a token for `key_name`: 0 when granted, else the seconds until one is available."""
        ...


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets keyed by API key name; thread-safe (sync dependencies run in worker threads)."""

    def __init__(self, per_minute: int, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        """`per_minute` = 0 turns limiting off."""
        self.rate = per_minute / 60.0
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def acquire(self, key_name: str) -> float:
        """Take a token for `key_name`: 0 when granted, else the seconds until one is available."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        with self._lock:
            bucket = self._buckets.setdefault(key_name, _Bucket(float(self.burst), now))
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / self.rate


# The bucket refilled up to now; a clock behind the last writer's adds nothing rather than taking.
_REFILLED = "LEAST(%(burst)s::float8, b.tokens + GREATEST(0, %(now)s::float8 - b.updated) * %(rate)s::float8)"
# One statement, so concurrent requests of one key queue on its row lock and none sees a stale count.
# A new key starts with a full bucket, minus the token it takes now.
_TAKE = f"""
INSERT INTO rate_buckets AS b (key_name, tokens, updated, granted)
VALUES (%(key)s, %(burst)s::float8 - 1, %(now)s::float8, true)
ON CONFLICT (key_name) DO UPDATE SET
    tokens = CASE WHEN {_REFILLED} >= 1 THEN {_REFILLED} - 1 ELSE {_REFILLED} END,
    granted = {_REFILLED} >= 1,
    updated = GREATEST(b.updated, %(now)s::float8)
RETURNING tokens, granted
"""


# Seconds between attempts to reach the database while it is unavailable.
_RETRY_AFTER_OUTAGE_S = 5.0


class SharedRateLimiter:
    """Token buckets in the `rate_buckets` table, shared by every process on the database.

    `clock` is wall time (seconds since the epoch), the one clock replicas on several machines share
    (kept in step by NTP; a replica whose clock is behind adds no tokens). While the database is
    unreachable, each process limits on its own (`fallback`): the API still answers what needs no
    gallery, and a key still cannot go unlimited. After a failure it asks the database again only
    `_RETRY_AFTER_OUTAGE_S` later, so that requests do not each wait out the pool's timeout first.
    """

    def __init__(
        self,
        transaction: Callable[[], AbstractContextManager[psycopg.Connection]],
        per_minute: int,
        burst: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rate = per_minute / 60.0
        self.burst = burst
        self._transaction = transaction
        self._clock = clock
        self._fallback = RateLimiter(per_minute, burst, clock)
        self._database_again_at = -math.inf

    def acquire(self, key_name: str) -> float:
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        if now < self._database_again_at:
            return self._fallback.acquire(key_name)
        values = {"key": key_name, "now": now, "rate": self.rate, "burst": self.burst}
        try:
            with self._transaction() as conn:
                row = conn.execute(_TAKE, values).fetchone()
        except GalleryUnavailable as exc:
            logger.warning("rate limits per process while the database is unavailable: %s", exc)
            self._database_again_at = now + _RETRY_AFTER_OUTAGE_S
            return self._fallback.acquire(key_name)
        assert row is not None  # INSERT ... RETURNING always returns the row
        tokens, granted = row
        return 0.0 if granted else (1.0 - tokens) / self.rate


def limiter_for(
    settings: Settings, transaction: Callable[[], AbstractContextManager[psycopg.Connection]]
) -> Limiter:
    """The shared limiter when another API process may use this database, else this process's own.

    Only a single worker on its own embedded server is sure to be alone; it then saves the round trip.
    """
    alone = settings.external_dsn() is None and settings.workers() == 1
    if alone:
        return RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)
    return SharedRateLimiter(transaction, settings.rate_limit_per_minute, settings.rate_limit_burst)


def retry_after(seconds: float) -> str:
    """An HTTP `Retry-After` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
