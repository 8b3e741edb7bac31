"""What the access log costs (facegate.events): `/recognize` latency with EVENTS=off, decisions and
faces, and `GET /events` over a million events.

1. The same photo (a portrait, one face; a gallery of 100 people) is posted to `/recognize` of an
   in-process app (real models, an embedded PostgreSQL) N times per setting, one request at a time;
   p50 and p99 of the whole request, and of the `EventLog.record` call inside it (all the log adds
   to the request path: the writes happen in its background thread, whose CPU the request shares).
2. A million events (in three collections, statuses and people mixed as a gate's would be) are
   inserted with SQL, then `GET /events` is timed: the first page, filtered pages, and a page deep
   in the cursor chain.

    python benchmarks/events_bench.py                  # 300 requests per setting, 1,000,000 events
    python benchmarks/events_bench.py --requests 100 --events 100000   # quicker

Everything is written under a throwaway data directory, deleted at the end.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from fastapi.testclient import TestClient
from psycopg import sql

from facegate.api.app import create_app
from facegate.config import Settings
from facegate.events import EventLog
from facegate.gallery import EmbeddedServer

logger = logging.getLogger("events_bench")

KEY = "bench-" + uuid.uuid4().hex
FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces" / "portraits"
PROBE = FACES / "Barack_Obama" / "fr_obama.jpg"


def fresh_database(server: EmbeddedServer) -> str:
    name = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.dsn("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return server.dsn(name)


@contextmanager
def app(server: EmbeddedServer, data_dir: Path, events: str) -> Iterator[TestClient]:
    settings = Settings(
        _env_file=None,
        app_token=KEY,
        database_url=fresh_database(server),
        facegate_data_dir=data_dir,
        rate_limit_per_minute=0,
        events=events,
    )
    with TestClient(create_app(settings)) as client:
        client.headers["X-API-Key"] = KEY
        yield client


def percentiles(samples: list[float]) -> tuple[float, float]:
    values = np.asarray(samples) * 1000
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


def recognize_cost(server: EmbeddedServer, data_dir: Path, requests: int) -> None:
    photo = PROBE.read_bytes()
    others = sorted(p for p in FACES.glob("*/*.jpg") if "Obama" not in str(p))[:100]
    print(f"\n/recognize, one face, {requests} requests per setting, one at a time")
    print("| EVENTS | request p50 ms | request p99 ms | record() p50 µs | record() p99 µs |")
    print("| --- | --- | --- | --- | --- |")
    for events in ("off", "decisions", "faces"):
        with app(server, data_dir, events) as client:
            for index, path in enumerate(others):  # a gallery to search, as in use
                client.post(
                    "/register",
                    data={"name": f"person {index}"},
                    files={"image": (path.name, path.read_bytes())},
                    params={"allow_duplicate": "true"},
                )
            for _ in range(10):  # warm-up
                client.post("/recognize", files={"image": ("p.jpg", photo)})
            log = client.app.state.services.events  # type: ignore[attr-defined]
            log.flush()
            recording = timed(log)
            times = []
            for _ in range(requests):
                start = time.perf_counter()
                response = client.post("/recognize", files={"image": ("p.jpg", photo)})
                times.append(time.perf_counter() - start)
                assert response.status_code == 200, response.text
            log.flush()
            p50, p99 = percentiles(times)
            r50, r99 = percentiles(recording)
            print(f"| {events} | {p50:.1f} | {p99:.1f} | {r50 * 1000:.0f} | {r99 * 1000:.0f} |")


def timed(log: EventLog) -> list[float]:
    """Time each `record` call of `log` (what the access log adds to the request path itself)."""
    samples: list[float] = []
    record = log.record

    def wrapper(*args: Any, **kwargs: Any) -> None:
        start = time.perf_counter()
        record(*args, **kwargs)
        samples.append(time.perf_counter() - start)

    log.record = wrapper  # type: ignore[method-assign]
    return samples


FILL = """
    INSERT INTO events (at, collection_id, source, key_name, status, user_id, user_name, distance,
                        similarity, threshold, threshold_source, quality, box)
    SELECT now() - (i * interval '2 seconds'),
           1 + (i %% 3),
           CASE WHEN i %% 10 = 0 THEN 'stream' ELSE 'recognize' END,
           'camera-' || (i %% 5),
           CASE WHEN i %% 4 = 0 THEN 'no_match' WHEN i %% 17 = 0 THEN 'low_quality' ELSE 'match' END,
           CASE WHEN i %% 4 = 0 OR i %% 17 = 0 THEN NULL ELSE 1 + (i %% 5000) END,
           CASE WHEN i %% 4 = 0 OR i %% 17 = 0 THEN NULL ELSE 'person ' || (i %% 5000) END,
           random() * 0.2, random(), 0.06, 'fpir', NULL, ARRAY[10, 10, 110, 130]::real[]
    FROM generate_series(%s::int, %s::int) AS i"""


def events_latency(server: EmbeddedServer, data_dir: Path, count: int, repeats: int) -> None:
    with app(server, data_dir, "decisions") as client:
        for name in ("site-a", "site-b"):
            client.post("/collections", json={"name": name})
        dsn = client.app.state.services.settings.database_url  # type: ignore[attr-defined]
        start = time.perf_counter()
        with psycopg.connect(dsn, autocommit=True) as conn:
            for first in range(1, count + 1, 100_000):
                conn.execute(FILL, (first, min(first + 99_999, count)))
            conn.execute("ANALYZE events")
        print(f"\n{count:,} events inserted in {time.perf_counter() - start:.0f} s")
        deep = client.get("/events", params={"limit": 1}).json()["events"][0]["id"] - count // 2
        newest = datetime.fromisoformat(client.get("/events", params={"limit": 1}).json()["events"][0]["at"])
        day = {"since": (newest - timedelta(days=1)).isoformat(), "until": newest.isoformat()}
        cases = {
            "first page (50), every collection": {},
            "first page, one collection": {"collection": "site-a"},
            "first page, no_match in one collection": {"collection": "site-a", "status": "no_match"},
            "one person's events": {"person": 1234},
            "page 500 deep (cursor at the middle)": {"cursor": deep},
            "a day's range (since, until)": day,
            "500 per page": {"limit": 500},
        }
        print(f"GET /events over {count:,} events, {repeats} requests each")
        print("| query | p50 ms | p99 ms |")
        print("| --- | --- | --- |")
        for label, params in cases.items():
            times = []
            for _ in range(repeats):
                begin = time.perf_counter()
                response = client.get("/events", params=params)
                times.append(time.perf_counter() - begin)
                assert response.status_code == 200, response.text
            p50, p99 = percentiles(times)
            print(f"| {label} | {p50:.1f} | {p99:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300, help="/recognize requests per setting")
    parser.add_argument("--events", type=int, default=1_000_000, help="events for the GET /events part")
    parser.add_argument("--repeats", type=int, default=50, help="GET /events requests per query")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    directory = Path(tempfile.mkdtemp(prefix="facegate-events-bench-"))
    server = EmbeddedServer(directory / "pg", database="postgres")
    try:
        server.start()
        recognize_cost(server, directory, args.requests)
        events_latency(server, directory, args.events, args.repeats)
    finally:
        server.release()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
