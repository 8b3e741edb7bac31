"""What one rate-limit check costs: the in-process token bucket against the shared one in PostgreSQL.

Times `acquire` as the API calls it (once per authenticated request, from a worker thread), on a
throwaway embedded PostgreSQL through the gallery's own connection pool: one thread, then several
threads taking tokens of one key at once (they queue on that key's row lock) and of different keys.

    python benchmarks/ratelimit_bench.py --calls 5000 --threads 4
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from facegate.api.ratelimit import Limiter, RateLimiter, SharedRateLimiter
from facegate.gallery import EmbeddedServer, Gallery

# A rate no benchmark exhausts: every call takes the whole path (refill, take, write).
PER_MINUTE = 10**9
BURST = 10**9


def latencies(limiter: Limiter, key: Callable[[int], str], calls: int, threads: int) -> list[float]:
    """Seconds per `acquire`, `calls` in all, spread over `threads` threads."""

    def one(index: int) -> float:
        began = time.perf_counter()
        limiter.acquire(key(index))
        return time.perf_counter() - began

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, range(calls)))


def report(name: str, samples: list[float], wall: float) -> None:
    ordered = sorted(samples)
    p50 = statistics.median(ordered) * 1e3
    p99 = ordered[int(0.99 * (len(ordered) - 1))] * 1e3
    print(f"| {name} | {p50:.3f} | {p99:.3f} | {len(samples) / wall:,.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="facegate-ratelimit-bench-"))
    server = EmbeddedServer(work / "pg")
    try:
        gallery = Gallery.open(server.start(), "bench", 8, pool_max=max(8, args.threads))
        local = RateLimiter(PER_MINUTE, BURST)
        shared = SharedRateLimiter(gallery.transaction, PER_MINUTE, BURST)
        print("| limiter, threads, keys | p50 ms | p99 ms | checks/s |")
        print("|---|---:|---:|---:|")
        cases = [
            ("in-process, 1, one key", local, 1, lambda _: "k"),
            ("PostgreSQL, 1, one key", shared, 1, lambda _: "k"),
            (f"PostgreSQL, {args.threads}, one key", shared, args.threads, lambda _: "k"),
            (
                f"PostgreSQL, {args.threads}, a key each",
                shared,
                args.threads,
                lambda i: f"k{i % args.threads}",
            ),
        ]
        for name, limiter, threads, key in cases:
            latencies(limiter, key, min(500, args.calls), threads)  # warm: pool, plans, buffers
            began = time.perf_counter()
            samples = latencies(limiter, key, args.calls, threads)
            report(name, samples, time.perf_counter() - began)
        gallery.close()
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
