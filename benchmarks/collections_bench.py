"""Search in a small collection of a big gallery against the same collection alone in its own database.

The issue's question: with collections in one `faces` table, does a 1,000-person collection inside a
100,000-person database search as fast, and find the same people, as a 1,000-person database alone?
And which schema answers it best: the one HNSW index with a filter on `collection_id` (pgvector 0.8's
iterative scans go on past `ef_search` candidates until enough rows pass the filter), the planner's
own choice between that and the b-tree on `collection_id` (read the collection's rows, sort them:
exact), or a partial HNSW index per collection.

Data: synthetic unit vectors of dimension 128 (the dlib model's), people scattered around 200
random directions so that the data is clustered like faces rather than uniform noise (their numbers
say how the schema behaves, not how accurate face search is; benchmarks/search_bench.py measures
that on real embeddings). One face per person; the small collection's people are interleaved at
random among the others, as people enrolled over time would be. The probes are the small
collection's people with noise added. recall@K is against exact search within the collection
(NumPy, float64): the share of the exact K nearest people that the search returned; "short" counts
the probes that got fewer than K people.

    python benchmarks/collections_bench.py                 # 100,000 people, a 1,000-person collection
    python benchmarks/collections_bench.py --people 20000  # quicker

Everything is written under a throwaway data directory, deleted at the end.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql

from facegate.gallery import EmbeddedServer, Gallery
from facegate.gallery.schema import HNSW_EF_CONSTRUCTION, HNSW_INDEX, HNSW_M

logger = logging.getLogger("collections_bench")

DIM = 128
MODEL = "synthetic-128"
SMALL, MID, BIG = "site", "region", "default"  # collections 2 and 3; everyone else is in `default` (1)
PARTIAL_INDEX = "faces_site_hnsw_idx"


@dataclass(frozen=True)
class Data:
    vectors: np.ndarray  # (people, DIM) float32; row i is user id i + 1
    collection_ids: np.ndarray  # (people,) collection id of each person
    probes: np.ndarray  # (probes, DIM)


@dataclass(frozen=True)
class Row:
    setting: str
    p50_ms: float
    p95_ms: float
    recall_1: float
    recall_k: float
    short: int


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def make_data(rng: np.random.Generator, people: int, small: int, mid: int, probes: int) -> Data:
    centres = unit(rng.standard_normal((200, DIM)))
    vectors = unit(centres[rng.integers(0, 200, people)] + 0.6 * unit(rng.standard_normal((people, DIM))))
    collection_ids = np.full(people, 1)  # `default` is collection 1 (migration 4)
    chosen_rows = rng.choice(people, small + mid, replace=False)
    members = chosen_rows[:small]
    collection_ids[members] = 2  # SMALL, created second
    collection_ids[chosen_rows[small:]] = 3  # MID
    chosen = vectors[rng.choice(members, probes)]
    return Data(vectors, collection_ids, unit(chosen + 0.3 * unit(rng.standard_normal((probes, DIM)))))


# --- databases -----------------------------------------------------------------------------------


def fresh_database(server: EmbeddedServer, name: str) -> str:
    with psycopg.connect(server.dsn("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return server.dsn(name)


def load(dsn: str, data: Data) -> float:
    """The gallery schema (its own migrations), the people by binary COPY, then the HNSW index built
    in bulk; returns the index build time in seconds."""
    Gallery.open(dsn, MODEL, DIM).close()  # migrates, records the model
    with psycopg.connect(dsn, autocommit=True) as conn:
        register_vector(conn)
        index = conn.execute("SELECT pg_get_indexdef(%s::regclass)", (HNSW_INDEX,)).fetchone()
        assert index is not None
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(HNSW_INDEX)))
        conn.execute("INSERT INTO collections (name) VALUES (%s), (%s)", (SMALL, MID))
        with conn.transaction(), conn.cursor() as cursor:
            with cursor.copy("COPY users (id, collection_id, name) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["int8", "int8", "text"])
                for i, collection_id in enumerate(data.collection_ids.tolist(), start=1):
                    copy.write_row((i, collection_id, f"person {i}"))
            with cursor.copy(
                "COPY faces (user_id, collection_id, embedding, model, box) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["int8", "int8", "vector", "text", "float4[]"])
                box = [0.0, 0.0, 1.0, 1.0]
                for i, (vector, collection_id) in enumerate(
                    zip(data.vectors, data.collection_ids.tolist(), strict=True), 1
                ):
                    copy.write_row((i, collection_id, vector, MODEL, box))
        conn.execute("SELECT setval(pg_get_serial_sequence('users', 'id'), %s)", (len(data.vectors),))
        conn.execute("SET maintenance_work_mem = '1GB'")
        conn.execute("SET max_parallel_maintenance_workers = 1")
        began = time.perf_counter()
        conn.execute(index[0])
        seconds = time.perf_counter() - began
        conn.execute("VACUUM ANALYZE users")
        conn.execute("VACUUM ANALYZE faces")
    return seconds


def small_collection(data: Data) -> np.ndarray:
    """The rows (user id - 1) of the small collection's people."""
    return np.flatnonzero(data.collection_ids == 2)


# --- measuring -----------------------------------------------------------------------------------

Search = Callable[[np.ndarray], list[int]]  # a probe -> the user ids found, nearest first


def exact_ids(data: Data, rows: np.ndarray, k: int) -> np.ndarray:
    distances = 1.0 - data.probes.astype(np.float64) @ data.vectors[rows].astype(np.float64).T
    return rows[np.argsort(distances, axis=1)[:, :k]] + 1


def measure(
    setting: str, search: Search, data: Data, exact: np.ndarray, warmup: int, warm: Search | None = None
) -> Row:
    """Latency and recall of `search` over the probes, after `warmup` untimed calls of `warm` (by
    default `search` itself)."""
    for probe in data.probes[:warmup]:
        (warm or search)(probe)
    times, found = [], []
    for probe in data.probes:
        began = time.perf_counter()
        found.append(search(probe))
        times.append((time.perf_counter() - began) * 1000)
    k = exact.shape[1]
    recall_1 = np.mean([bool(ids) and ids[0] == row[0] for ids, row in zip(found, exact, strict=True)])
    recall_k = np.mean([len(set(ids) & set(row.tolist())) / k for ids, row in zip(found, exact, strict=True)])
    row = Row(
        setting,
        float(np.percentile(times, 50)),
        float(np.percentile(times, 95)),
        float(recall_1),
        float(recall_k),
        sum(len(ids) < k for ids in found),
    )
    logger.info("%s: p50 %.2f ms, recall@%d %.4f", setting, row.p50_ms, k, row.recall_k)
    return row


def product_search(gallery: Gallery, collection: str, k: int) -> Search:
    """Gallery.search as the API calls it."""
    return lambda probe: [m.user_id for m in gallery.search(probe, k=k, collection=collection)[0]]


def search_with(gallery: Gallery, collection_id: int, k: int, settings: dict[str, str]) -> Search:
    """The gallery's own nearest-people query and loop, with these settings for the transaction."""

    def search(probe: np.ndarray) -> list[int]:
        with gallery.transaction() as conn:
            for name, value in settings.items():
                conn.execute("SELECT set_config(%s, %s, true)", (name, value))
            return [m.user_id for m in gallery._nearest_people(conn, probe, k, collection_id)]

    return search


def plan(gallery: Gallery, collection_id: int, probe: np.ndarray, settings: dict[str, str]) -> str:
    """Which index the planner picks for the search's candidate query."""
    with gallery.transaction() as conn:
        for name, value in settings.items():
            conn.execute("SELECT set_config(%s, %s, true)", (name, value))
        lines = conn.execute(
            "EXPLAIN SELECT user_id FROM faces WHERE collection_id = %s ORDER BY embedding <=> %s LIMIT 20",
            (collection_id, probe),
        ).fetchall()
    scans = [line.strip() for (line,) in lines if "Scan" in line]
    return scans[0].split("  (")[0].lstrip("-> ") if scans else "?"


@contextmanager
def opened(dsn: str, ef_search: int) -> Iterator[Gallery]:
    gallery = Gallery.open(dsn, MODEL, DIM, pool_min=1, pool_max=1, ef_search=ef_search)
    try:
        yield gallery
    finally:
        gallery.close()


def bench(
    server: EmbeddedServer, data: Data, k: int, ef_search: int, warmup: int
) -> tuple[list[Row], list[str]]:
    rows: list[Row] = []
    notes: list[str] = []
    members = small_collection(data)

    alone = Data(data.vectors[members], np.full(len(members), 2), data.probes)
    dsn = fresh_database(server, "alone")
    notes.append(f"{len(members):,}-person database alone: index built in {load(dsn, alone):.1f} s")
    with opened(dsn, ef_search) as gallery:
        notes.append(f"  planner: {plan(gallery, 2, data.probes[0], {})}")
        exact = exact_ids(alone, np.arange(len(members)), k)
        search = product_search(gallery, SMALL, k)
        rows.append(measure(f"{len(members):,} people alone, Gallery.search", search, alone, exact, warmup))

    dsn = fresh_database(server, "shared")
    notes.append(f"{len(data.vectors):,}-person database: index built in {load(dsn, data):.1f} s")
    with opened(dsn, ef_search) as gallery:
        rows += measure_shared(dsn, gallery, data, k, ef_search, warmup, notes)
    return rows, notes


def measure_shared(
    dsn: str, gallery: Gallery, data: Data, k: int, ef_search: int, warmup: int, notes: list[str]
) -> Iterator[Row]:
    """The small collection inside the big database, schema by schema; the other collections too."""
    sizes = {cid: int(np.sum(data.collection_ids == cid)) for cid in (1, 2, 3)}
    exact = {cid: exact_ids(data, np.flatnonzero(data.collection_ids == cid), k) for cid in sizes}
    small = f"{sizes[2]:,} in {len(data.vectors):,}"

    for cid, name in ((2, SMALL), (3, MID), (1, BIG)):
        notes.append(
            f"  planner, the {sizes[cid]:,}-person collection: {plan(gallery, cid, data.probes[0], {})}"
        )
        setting = f"{sizes[cid]:,} in {len(data.vectors):,}, Gallery.search (the planner's choice)"
        yield measure(setting, product_search(gallery, name, k), data, exact[cid], warmup)

    # A new connection that first serves searches of the big collection, then the small one's: once
    # psycopg has prepared the query (its fifth run), may PostgreSQL's plan cache keep the big
    # collection's plan for every collection?
    for mode in ("auto", "force_custom_plan"):
        settings = {"plan_cache_mode": mode}
        setting = f"{small}, on a connection that served {warmup} searches of the {sizes[1]:,} first, {mode}"
        with opened(dsn, ef_search) as fresh:
            warm = search_with(fresh, 1, k, settings)
            yield measure(setting, search_with(fresh, 2, k, settings), data, exact[2], warmup, warm)

    hnsw_only = {"enable_seqscan": "off", "enable_bitmapscan": "off"}
    with psycopg.connect(dsn, autocommit=True) as conn:  # the b-tree aside: HNSW is the only way in
        conn.execute("DROP INDEX faces_collection_id_idx")
    notes.append(f"  without the b-tree: {plan(gallery, 2, data.probes[0], hnsw_only)}")
    for mode in ("relaxed_order", "strict_order", "off"):
        setting = f"{small}, one HNSW index + filter, iterative_scan={mode}"
        search = search_with(gallery, 2, k, {**hnsw_only, "hnsw.iterative_scan": mode})
        yield measure(setting, search, data, exact[2], warmup)

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '1GB'")
        # The migration's own index definition, for the small collection's rows only.
        row = conn.execute("SELECT pg_get_indexdef(%s::regclass)", (HNSW_INDEX,)).fetchone()
        assert row is not None
        began = time.perf_counter()
        conn.execute(row[0].replace(HNSW_INDEX, PARTIAL_INDEX, 1) + " WHERE collection_id = 2")
        notes.append(f"partial index on the small collection built in {time.perf_counter() - began:.1f} s")
        conn.execute("ANALYZE faces")
    notes.append(f"  planner with it: {plan(gallery, 2, data.probes[0], hnsw_only)}")
    setting = f"{small}, a partial HNSW index for the collection"
    yield measure(setting, search_with(gallery, 2, k, hnsw_only), data, exact[2], warmup)


def cpu() -> str:
    text = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if "Model name" in line), "?")
    flags = sorted({flag for flag in text.split() if flag.startswith("avx512") or "vnni" in flag})
    return (
        f"{model}, {os.cpu_count()} CPUs, {'flags ' + ' '.join(flags) if flags else 'no avx512/vnni flags'}"
    )


def print_table(rows: list[Row], notes: list[str], k: int, args: argparse.Namespace) -> None:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {cpu()}; load average {load}")
    print(
        f"{args.people:,} people, collections of {args.collection:,} and {args.mid:,}, {args.probes} probes, "
        f"k={k}, HNSW m={HNSW_M} ef_construction={HNSW_EF_CONSTRUCTION}, ef_search={args.ef_search}"
    )
    for note in notes:
        print(note)
    print(f"| setting | p50 ms | p95 ms | recall@1 | recall@{k} | fewer than {k} |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row.setting} | {row.p50_ms:.2f} | {row.p95_ms:.2f} | {row.recall_1:.4f} | "
              f"{row.recall_k:.4f} | {row.short} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--people", type=int, default=100_000, help="people in the big database")
    parser.add_argument("--collection", type=int, default=1_000, help="people in the small collection")
    parser.add_argument("--mid", type=int, default=10_000, help="people in a middle-sized collection")
    parser.add_argument("--probes", type=int, default=300)
    parser.add_argument("--k", type=int, default=5, help="people per search (top-K)")
    parser.add_argument("--ef-search", type=int, default=200, help="hnsw.ef_search, as HNSW_EF_SEARCH")
    parser.add_argument("--seed", type=int, default=16)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logger.setLevel(logging.INFO)

    data = make_data(np.random.default_rng(args.seed), args.people, args.collection, args.mid, args.probes)
    directory = Path(tempfile.mkdtemp(prefix="facegate-collections-bench-"))
    server = EmbeddedServer(directory / "pg", database="postgres")
    try:
        server.start()
        rows, notes = bench(server, data, args.k, args.ef_search, warmup=min(20, args.probes))
    finally:
        server.release()
        shutil.rmtree(directory, ignore_errors=True)
    print_table(rows, notes, args.k, args)


if __name__ == "__main__":
    main()
