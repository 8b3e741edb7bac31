"""Throughput and latency of the API under load: Locust against `facegate serve` with 1 and 2 workers.

For each worker count the script starts `facegate serve --workers N` on a loopback port (its own
throwaway data directory, embedded PostgreSQL, no rate limit), enrols one photo of every person of
the shared portraits, warms the models up, and runs `deploy/locustfile.py` headless for a fixed time
per endpoint and number of concurrent users, straight to uvicorn and through nginx (the project's
`deploy/nginx.conf`, rendered by the end-to-end tests' helper). It prints one table: requests per
second, median and 95th-percentile latency, refused or failed requests by status, and the machine's
load average when each run began (other work on the machine skews the numbers).

    python benchmarks/load_test.py                              # 1 and 2 workers, direct and nginx
    python benchmarks/load_test.py --workers 2 --users 16 --duration 30 --via direct
    python benchmarks/load_test.py --url http://127.0.0.1:8000 --key "$KEY"   # a running service

Locust's CSVs and the servers' logs go to a temporary folder (printed); nothing is written to the
repository. Needs the `bench` extra (`pip install -e '.[bench]'`) and, for `--via nginx`, nginx.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
# The end-to-end tests' helpers start and stop servers and render nginx's config; reuse them.
sys.path.insert(0, str(REPO))
from tests.servers import (  # noqa: E402
    API_START_TIMEOUT,
    child,
    clean_env,
    free_port,
    nginx_server,
    wait_until_up,
)

logger = logging.getLogger("load_test")

LOCUSTFILE = REPO / "deploy" / "locustfile.py"
PORTRAITS = REPO.parent / "shared" / "data" / "faces" / "portraits"
TIMEOUT = 120.0


@dataclass(frozen=True)
class Run:
    """One Locust run: where it went and what it measured."""

    workers: str
    via: str
    endpoint: str
    users: int
    load: float  # 1-minute load average when the run began
    requests: int
    rps: float
    p50_ms: float
    p95_ms: float
    failures: str  # "503×4, 429×2"; empty when every request succeeded


def main() -> int:
    args = _parser().parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    out = Path(tempfile.mkdtemp(prefix="facegate-load-"))
    logger.info("Locust CSVs and server logs: %s", out)
    runs: list[Run] = []
    if args.url:
        key = args.key or os.environ.get("FACEGATE_API_KEY")
        if not key:
            raise SystemExit("--url needs --key (or FACEGATE_API_KEY)")
        enrol(args.url, key)
        runs += measure(args, args.url, key, "external", "given", out)
    else:
        for workers in args.workers:
            runs += measure_service(args, workers, out)
    print_table(runs)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="measure this running API instead of starting one")
    parser.add_argument("--key", help="its API key (or FACEGATE_API_KEY)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to compare")
    parser.add_argument("--users", type=int, nargs="+", default=[1, 4, 16], help="concurrent users")
    parser.add_argument(
        "--endpoints", nargs="+", default=["detect", "recognize"], choices=["detect", "recognize"]
    )
    parser.add_argument("--via", nargs="+", default=["direct", "nginx"], choices=["direct", "nginx"])
    parser.add_argument("--duration", type=int, default=20, help="seconds per run (default 20)")
    return parser


# --- the service ---------------------------------------------------------------------------------


def measure_service(args: argparse.Namespace, workers: int, out: Path) -> list[Run]:
    key = secrets.token_urlsafe(24)
    work = out / f"workers-{workers}"
    with ExitStack() as stack:
        api = stack.enter_context(service(work, workers, key))
        enrol(api, key)
        warm_up(api, key, workers)
        runs: list[Run] = []
        for via in args.via:
            url = api
            if via == "nginx":
                upstream = api.removeprefix("http://")
                gateway = stack.enter_context(nginx_server(work, free_port(), upstream, "127.0.0.1:9"))
                url = f"{gateway}/api"
            runs += measure(args, url, key, str(workers), via, work)
        return runs


@contextmanager
def service(work: Path, workers: int, key: str) -> Iterator[str]:
    """`facegate serve --workers N` with a fresh data directory; yields its URL."""
    port = free_port()
    env = clean_env(APP_TOKEN=key, FACEGATE_DATA_DIR=str(work / "data"), RATE_LIMIT_PER_MINUTE="0")
    command = [sys.executable, "-m", "facegate", "serve", "--port", str(port), "--workers", str(workers)]
    with child(f"api-{workers}", command, work, env) as log:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(f"{url}/health", log, API_START_TIMEOUT)
        yield url


def enrol(url: str, key: str) -> None:
    """Register every person of the shared portraits (their first usable photo) not yet registered."""
    with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=TIMEOUT) as client:
        for person in sorted(p for p in PORTRAITS.iterdir() if p.is_dir()):
            for photo in sorted(person.iterdir()):
                name = person.name.replace("_", " ")
                answer = client.post(
                    "/register", data={"name": name}, files={"image": (photo.name, photo.read_bytes())}
                )
                if answer.status_code in (201, 409):  # 409: registered by an earlier run
                    break
        logger.info("gallery: %s", client.get("/stats").json())


def warm_up(url: str, key: str, workers: int) -> None:
    """A few requests per worker first: the first inferences of a process allocate ONNX Runtime's memory."""
    photo = next(PORTRAITS.glob("Barack_Obama/*.jpg")).read_bytes()

    def request(path: str, field: str) -> int:
        files = {field: ("warm-up.jpg", photo)}
        return httpx.post(
            f"{url}{path}", headers={"X-API-Key": key}, files=files, timeout=TIMEOUT
        ).status_code

    with ThreadPoolExecutor(2 * workers) as pool:
        list(
            pool.map(
                lambda i: request(*(("/detect", "file"), ("/recognize", "image"))[i % 2]), range(4 * workers)
            )
        )


# --- Locust --------------------------------------------------------------------------------------


def measure(args: argparse.Namespace, url: str, key: str, workers: str, via: str, out: Path) -> list[Run]:
    return [
        locust(url, key, endpoint, users, args.duration, out / f"{via}-{endpoint}-{users}", workers, via)
        for endpoint in args.endpoints
        for users in args.users
    ]


def locust(
    url: str, key: str, endpoint: str, users: int, seconds: int, prefix: Path, workers: str, via: str
) -> Run:
    """One headless Locust run of `users` users calling `endpoint` for `seconds`."""
    load = os.getloadavg()[0]
    logger.info("%s worker(s), %s, /%s, %d user(s), load %.2f", workers, via, endpoint, users, load)
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", url,
        "--users", str(users), "--spawn-rate", str(users), "--run-time", f"{seconds}s",
        "--tags", endpoint, "--csv", str(prefix), "--only-summary", "--loglevel", "WARNING",
        # Requests still in flight at the end are waited for and counted, not cut off.
        "--stop-timeout", str(int(TIMEOUT)),
    ]  # fmt: skip
    env = {**os.environ, "FACEGATE_API_KEY": key}
    # Locust exits with 1 when any request failed; the failures are what the table reports.
    subprocess.run(command, env=env, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stats = _row(Path(f"{prefix}_stats.csv"), f"/{endpoint}")
    return Run(
        workers=workers,
        via=via,
        endpoint=f"/{endpoint}",
        users=users,
        load=load,
        requests=int(stats["Request Count"]),
        rps=float(stats["Requests/s"]),
        p50_ms=float(stats["50%"]),
        p95_ms=float(stats["95%"]),
        failures=_failures(Path(f"{prefix}_failures.csv")),
    )


def _row(path: Path, name: str) -> dict[str, str]:
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["Name"] == name:
                return row
    raise RuntimeError(f"Locust recorded no request to {name} (see {path})")


def _failures(path: Path) -> str:
    """Failures by HTTP status (or by error, for a failure without one), most frequent first."""
    counts: Counter[str] = Counter()
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            status = re.search(r"\b([45]\d\d)\b", row["Error"])
            counts[status.group(1) if status else row["Error"][:40]] += int(row["Occurrences"])
    return ", ".join(f"{what}×{count}" for what, count in counts.most_common())


# --- the table -----------------------------------------------------------------------------------


def print_table(runs: list[Run]) -> None:
    single = {(r.via, r.endpoint, r.users): r.rps for r in runs if r.workers == "1"}
    print(f"\n{time.strftime('%Y-%m-%d %H:%M %Z')}, {os.cpu_count()} CPU cores\n")
    columns = ["workers", "via", "endpoint", "users", "req/s", "vs 1 worker", "p50 ms", "p95 ms"]
    columns += ["requests", "refused/failed", "load"]
    print("| " + " | ".join(columns) + " |")
    print("| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |")
    for r in runs:
        base = single.get((r.via, r.endpoint, r.users))
        ratio = f"{r.rps / base:.2f}×" if base and r.workers != "1" else ""
        print(
            f"| {r.workers} | {r.via} | {r.endpoint} | {r.users} | {r.rps:.2f} | {ratio} | {r.p50_ms:.0f} "
            f"| {r.p95_ms:.0f} | {r.requests} | {r.failures or '-'} | {r.load:.2f} |"
        )


if __name__ == "__main__":
    raise SystemExit(main())
