"""Scoped keys, rate and concurrency limits, body limits, request ids, bad input.

The time budget, logs and metrics have their own modules (test_deadlines, test_logging, test_metrics)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path

import anyio
import psycopg
import pytest
from fastapi.testclient import TestClient
from starlette.types import Message, Receive, Scope, Send

from facegate.api.auth import KeyRing
from facegate.api.middleware import UploadSizeLimit
from facegate.api.ratelimit import RateLimiter, SharedRateLimiter, limiter_for, retry_after
from facegate.config import Settings
from facegate.gallery import Gallery, GalleryUnavailable
from tests.data import FACES, REPO
from tests.support import (
    API_KEY,
    BAD_UPLOAD_CASES,
    SCOPED_KEYS,
    FakeClock,
    bad_upload,
    gallery_size,
    scoped_headers,
    services,
    unique,
    upload,
)

SECURITY_PAGE = REPO / "docs" / "security.md"
OBAMA = FACES / "portraits" / "Barack_Obama"
BIDEN = FACES / "portraits" / "Joe_Biden"

# The columns of the security page's auth table, and the key each sends (None: no header).
CALLERS: dict[str, str | None] = {
    "no key": None,
    "wrong key": "not-" + API_KEY,
    "`detect`": SCOPED_KEYS["detect"],
    "`recognize`": SCOPED_KEYS["recognize"],
    "`admin`": SCOPED_KEYS["admin"],
}


def documented_auth_table() -> dict[tuple[str, str], dict[str, str]]:
    """(method, path) → {caller column: "✓" | "401" | "403"}, from docs/security.md."""
    lines = SECURITY_PAGE.read_text().splitlines()
    header_at = next(i for i, line in enumerate(lines) if line.startswith("| endpoint | no key |"))
    columns = [cell.strip() for cell in lines[header_at].strip("|").split("|")][1:]
    table = {}
    for line in lines[header_at + 2 :]:
        if not line.startswith("|"):
            break
        first, *cells = (cell.strip() for cell in line.strip("|").split("|"))
        method, path = first.strip("`").split(" ", 1)
        table[(method, path)] = dict(zip(columns, cells, strict=True))
    return table


AUTH_TABLE = documented_auth_table()


# --- keys and scopes -----------------------------------------------------------------------------


def test_documented_auth_table_lists_every_route_of_the_openapi_document(secured: TestClient) -> None:
    spec = secured.get("/openapi.json").json()
    operations = {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}
    assert operations == set(AUTH_TABLE)


@pytest.mark.parametrize(("method", "path"), sorted(AUTH_TABLE), ids=" ".join)
def test_auth_matrix_matches_the_security_page(secured: TestClient, method: str, path: str) -> None:
    # No body: a request that gets past the key check is answered 200, 404 or 422 without inference.
    url = path.replace("{user_id}", "1")
    for caller, expected in AUTH_TABLE[(method, path)].items():
        key = CALLERS[caller]
        response = secured.request(method, url, headers={} if key is None else {"X-API-Key": key})
        if expected == "✓":
            assert response.status_code not in (401, 403), (caller, response.text)
        else:
            assert response.status_code == int(expected), (caller, response.text)
            assert response.json()["detail"]


def test_a_key_without_the_scope_is_told_which_scope_is_needed(secured: TestClient) -> None:
    response = secured.post("/register", headers=scoped_headers("recognize"))
    assert response.status_code == 403
    assert "'recognize'" in response.json()["detail"] and "'admin'" in response.json()["detail"]
    unauthenticated = secured.post("/register", headers={"X-API-Key": "nope"})
    assert unauthenticated.headers["WWW-Authenticate"] == "API-Key"


@pytest.mark.parametrize(
    "extra", ["name-only", "a:detect", "a::key", ":detect:key", "a:superuser:key"]
)  # fmt: skip
def test_malformed_extra_keys_are_refused_at_start_up(extra: str) -> None:
    with pytest.raises(ValueError, match=r"name:scope:key|unknown scope"):
        KeyRing.parse("admin-key", extra)


def test_keys_are_kept_as_digests_only() -> None:
    ring = KeyRing.parse("admin-key", "ui:recognize:secret-key-1")
    assert "secret-key-1" not in repr(vars(ring)) and "admin-key" not in repr(vars(ring))
    assert ring.identify("secret-key-1").name == "ui"  # type: ignore[union-attr]
    assert ring.identify("secret-key-") is None and ring.identify("") is None


# --- rate limits ---------------------------------------------------------------------------------


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_minute=60, burst=3, clock=clock)
    assert [limiter.acquire("a") for _ in range(3)] == [0, 0, 0]
    assert limiter.acquire("a") == pytest.approx(1.0)  # one token a second
    assert limiter.acquire("b") == 0  # buckets are per key
    clock.now += 0.5
    assert limiter.acquire("a") == pytest.approx(0.5)
    clock.now += 0.5
    assert limiter.acquire("a") == 0
    clock.now += 3600
    assert [limiter.acquire("a") for _ in range(4)][-1] > 0  # refills to the burst, no further


def test_shared_buckets_hold_across_replicas(gallery: Gallery) -> None:
    """Two replicas' limiters on one database draw from one bucket per key, with the same arithmetic."""
    clock = FakeClock()
    first, second = (SharedRateLimiter(gallery.transaction, 60, 3, clock) for _ in range(2))
    assert [first.acquire("a"), second.acquire("a"), first.acquire("a")] == [0, 0, 0]
    assert second.acquire("a") == pytest.approx(1.0)  # the burst is spent for both
    assert first.acquire("b") == 0  # buckets are per key
    clock.now += 0.5
    assert first.acquire("a") == pytest.approx(0.5)
    clock.now += 0.5
    assert second.acquire("a") == 0
    clock.now -= 30  # a replica whose clock is behind gets no token from it
    assert first.acquire("a") > 0
    clock.now += 3600
    assert [second.acquire("a") for _ in range(4)][-1] > 0  # refills to the burst, no further


def test_shared_bucket_grants_exactly_the_burst_to_concurrent_requests(gallery: Gallery) -> None:
    clock = FakeClock()  # time stands still: only the burst can be granted
    limiters = [SharedRateLimiter(gallery.transaction, 1, 10, clock) for _ in range(4)]
    with ThreadPoolExecutor(8) as pool:
        waits = list(pool.map(lambda i: limiters[i % 4].acquire("k"), range(40)))
    assert waits.count(0.0) == 10


def test_shared_limiter_limits_per_process_while_the_database_is_away(gallery: Gallery) -> None:
    clock = FakeClock()
    attempts: list[float] = []
    database = {"up": False}

    def transaction() -> AbstractContextManager[psycopg.Connection]:
        attempts.append(clock.now)
        if not database["up"]:
            raise GalleryUnavailable("the database is unavailable: test")
        return gallery.transaction()

    limiter = SharedRateLimiter(transaction, 60, 2, clock)
    assert [limiter.acquire("a") for _ in range(3)] == [0, 0, pytest.approx(1.0)]
    assert attempts == [100.0]  # not once a request: each would wait for the pool's timeout first
    database["up"] = True
    clock.now += 10
    assert limiter.acquire("a") == 0  # asked again, and its bucket there is full
    assert attempts == [100.0, 110.0]


def test_the_limiter_is_shared_unless_one_worker_owns_its_database(tmp_path: Path) -> None:
    def limiter(**values: object) -> object:
        settings = Settings(facegate_data_dir=tmp_path, _env_file=None, **values)  # type: ignore[arg-type]
        return limiter_for(settings, lambda: None)  # type: ignore[arg-type,return-value]

    assert isinstance(limiter(web_concurrency=1), RateLimiter)  # embedded, one worker
    assert isinstance(limiter(web_concurrency=2), SharedRateLimiter)  # workers share the embedded one
    assert isinstance(limiter(web_concurrency=1, database_url="postgresql://db/x"), SharedRateLimiter)


def test_rate_limit_zero_means_unlimited() -> None:
    limiter = RateLimiter(per_minute=0, burst=1)
    assert all(limiter.acquire("a") == 0 for _ in range(1000))


def test_over_the_rate_a_key_gets_429_with_retry_after(
    secured: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    limiter = RateLimiter(per_minute=6, burst=2, clock=FakeClock())
    monkeypatch.setattr(services(secured), "rate_limiter", limiter)
    codes = [secured.get("/stats", headers=scoped_headers("recognize")).status_code for _ in range(2)]
    limited = secured.get("/stats", headers=scoped_headers("recognize"))
    assert codes == [200, 200] and limited.status_code == 429
    assert limited.headers["Retry-After"] == "10"  # 6 a minute: the next token in 10 s
    assert "recognize-client" in limited.json()["detail"]
    assert secured.get("/stats", headers=scoped_headers("admin")).status_code == 200  # other keys unaffected
    assert secured.get("/stats").status_code == 401  # no key: refused before the rate is counted


# --- bounded inference queue ---------------------------------------------------------------------


@pytest.fixture
def inference_busy(secured: TestClient, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The app's only inference slot taken by someone else, and no queue allowed."""
    limiter = anyio.CapacityLimiter(1)
    monkeypatch.setattr(services(secured), "inference_limiter", limiter)
    monkeypatch.setattr(services(secured).settings, "max_inference_queue", 0)
    blocker = object()
    secured.portal.call(limiter.acquire_on_behalf_of, blocker)  # type: ignore[union-attr]
    yield
    secured.portal.call(limiter.release_on_behalf_of, blocker)  # type: ignore[union-attr]


@pytest.mark.usefixtures("inference_busy")
def test_a_request_beyond_the_inference_queue_is_503_with_retry_after(secured: TestClient) -> None:
    before = gallery_size(secured, "admin")
    started = time.monotonic()
    response = secured.post(
        "/detect", headers=scoped_headers("detect"), files=upload(OBAMA / "fr_obama_small.jpg")
    )
    assert time.monotonic() - started < 2  # refused at once, not queued
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert "waiting for inference" in response.json()["detail"]
    registered = secured.post(
        "/register",
        headers=scoped_headers("admin"),
        data={"name": unique("busy")},
        files=upload(OBAMA / "fr_obama_small.jpg", "image"),
    )
    assert registered.status_code == 503 and gallery_size(secured, "admin") == before
    metrics = secured.get("/metrics", headers=scoped_headers("detect")).text
    assert 'facegate_inference_requests{state="running"} 1.0' in metrics


# --- body limits ---------------------------------------------------------------------------------


def test_a_streamed_body_is_refused_once_it_passes_the_limit() -> None:
    """Without Content-Length the middleware counts the bytes and stops reading at the limit."""
    chunks_read = 0

    async def receive() -> Message:
        nonlocal chunks_read
        chunks_read += 1
        return {"type": "http.request", "body": b"x" * 1000, "more_body": True}  # endless

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        while (await receive()).get("more_body"):
            pass

    async def send(message: Message) -> None:
        pass

    scope = {"type": "http", "method": "POST", "path": "/", "headers": []}
    with pytest.raises(Exception, match="over 10000 bytes") as raised:
        anyio.run(UploadSizeLimit(app, max_body=10_000), scope, receive, send)
    assert getattr(raised.value, "status_code", None) == 413
    assert chunks_read == 11


def test_a_chunked_upload_over_the_limit_is_413(secured: TestClient) -> None:
    limit = services(secured).settings.max_upload_bytes

    def body() -> Iterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n\xff\xd8\xff'
        for _ in range(2 * limit // (1 << 20) + 2):
            yield b"\0" * (1 << 20)
        yield b"\r\n--b--\r\n"

    response = secured.post(
        "/detect",
        headers={**scoped_headers("detect"), "Content-Type": "multipart/form-data; boundary=b"},
        content=body(),
    )
    assert response.status_code == 413 and "over" in response.json()["detail"]


# --- request ids ---------------------------------------------------------------------------------


def test_request_ids_are_honoured_or_generated(secured: TestClient) -> None:
    assert secured.get("/health", headers={"X-Request-ID": "abc-123.x:y"}).headers["X-Request-ID"] == (
        "abc-123.x:y"
    )
    for bad in ("has space", "x" * 129, "semi;colon"):
        generated = secured.get("/health", headers={"X-Request-ID": bad}).headers["X-Request-ID"]
        assert re.fullmatch(r"[0-9a-f]{32}", generated)
    assert secured.get("/nowhere").headers["X-Request-ID"]  # on errors too


# --- bad input: the documented 4xx, and the gallery unchanged -----------------------------------


@pytest.mark.parametrize("value", ["-0.5", "nan", "inf", "-inf", "2.5", "abc", "1e400"])
@pytest.mark.parametrize("path", ["/recognize", "/verify"])
def test_bad_thresholds_are_422(secured: TestClient, path: str, value: str) -> None:
    photo = OBAMA / "fr_obama_small.jpg"
    files = (
        upload(photo, "image")
        if path == "/recognize"
        else {**upload(photo, "image1"), **upload(photo, "image2")}
    )
    response = secured.post(
        path, params={"threshold": value}, headers=scoped_headers("recognize"), files=files
    )
    assert response.status_code == 422 and response.json()["detail"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [("x" * 100_000, 422), ("x" * 2_000_000, 400), ("zero\u200bwidth", 422), ("line\u2028break", 422),
     ("para\u2029graph", 422), ("del\x7f", 422), ("\u200b", 422), ("\ud800", 422)],
    ids=["100k chars", "2 MB", "zero width", "line separator", "paragraph separator", "DEL",
         "only invisible", "lone surrogate"],
)  # fmt: skip
def test_unusable_names_are_refused_and_nothing_is_stored(
    secured: TestClient, name: str, expected: int
) -> None:
    before = gallery_size(secured, "admin")
    response = secured.post(
        "/register",
        headers=scoped_headers("admin"),
        data={"name": name.encode("utf-8", "surrogatepass")},
        files=upload(OBAMA / "fr_obama_small.jpg", "image"),
    )
    assert response.status_code == expected, response.text
    assert gallery_size(secured, "admin") == before


@pytest.fixture(scope="module")
def enrolled(secured: TestClient) -> Iterator[int]:
    """A registered person of the secured app."""
    response = secured.post(
        "/register",
        headers=scoped_headers("admin"),
        data={"name": unique("Barack Obama")},
        files=upload(OBAMA / "fr_obama.jpg", "image"),
    )
    assert response.status_code == 201, response.text
    yield response.json()["user_id"]
    secured.delete(f"/users/{response.json()['user_id']}", headers=scoped_headers("admin"))


@pytest.mark.parametrize("case", BAD_UPLOAD_CASES)
def test_bad_uploads_to_verify_and_add_face_get_the_documented_status(
    secured: TestClient, enrolled: int, case: str
) -> None:
    data, expected = bad_upload(case)
    bad = ("photo.jpg", data, "image/jpeg")
    before = gallery_size(secured, "admin")
    verified = secured.post(
        "/verify",
        headers=scoped_headers("recognize"),
        files={**upload(OBAMA / "fr_obama1.jpg", "image1"), "image2": bad},
    )
    added = secured.post(f"/users/{enrolled}/faces", headers=scoped_headers("admin"), files={"image": bad})
    assert (verified.status_code, added.status_code) == (expected, expected)
    assert gallery_size(secured, "admin") == before


def test_retry_after_is_whole_seconds() -> None:
    assert [retry_after(s) for s in (0.0, 0.01, 1.0, 1.2, 59.9)] == ["1", "1", "1", "2", "60"]
