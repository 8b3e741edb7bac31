"""The gallery: people, their face embeddings and nearest-person search, on PostgreSQL + pgvector.

Synchronous psycopg 3 on a connection pool: the API calls it from worker threads. Every method is
one transaction. Connection failures and pool timeouts become `GalleryUnavailable` (HTTP 503), with
a message fit for clients: PostgreSQL's own (socket and file paths) goes to the log only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import errors as pg_errors
from psycopg.rows import class_row
from psycopg_pool import ConnectionPool

from facegate.gallery.errors import (
    ConfusableNameError,
    DuplicateNameError,
    GalleryUnavailable,
    UnknownUserError,
)
from facegate.gallery.schema import migrate
from facegate.names import name_skeleton

if TYPE_CHECKING:
    from facegate.config import Settings

logger = logging.getLogger(__name__)

# Search fetches this many faces per wanted person, so that people with several photos near the
# query still leave k distinct people; if they do not, it fetches twice as many and asks again.
_FACES_PER_PERSON = 4
_MIN_CANDIDATES = 10

# A pool slot that cannot reconnect gives up after this long and is re-created on the next request,
# which caps the back-off between attempts: after an outage the pool is back within seconds.
_RECONNECT_TIMEOUT_S = 20.0
# The gallery's size sets each search's threshold (facegate.recognition). Counting a million people
# takes tens of milliseconds, so a count is reused this long; this process's own registrations and
# deletions are counted at once.
_SIZE_TTL_S = 5.0

# The health probe connects on its own, outside the pool, so that it answers at once while the pool
# is still waiting out DB_TIMEOUT; its result is kept this long, so that a flood of /health requests
# opens at most one connection per second per process.
_HEALTH_TTL_S = 1.0
_PROBE_TIMEOUT_S = 2  # libpq's connect_timeout: whole seconds, at least 2

UNAVAILABLE = "the database is unavailable; retry shortly"
DISK_FULL = "the database refuses writes: its disk is full"

_SELECT_USERS = """
    SELECT u.id, u.name, u.created_at, u.updated_at,
           (SELECT count(*) FROM faces f WHERE f.user_id = u.id) AS face_count
    FROM users u"""

# relaxed_order iterative scans may return the candidates slightly out of order; the grouping
# re-sorts them, so only the candidate set matters. The name is a scalar subquery so that it is
# looked up by primary key for the k people only, never by joining the whole users table.
_NEAREST_PEOPLE = """
    WITH candidates AS MATERIALIZED (
        SELECT user_id, embedding <=> %(query)s AS distance
        FROM faces
        ORDER BY embedding <=> %(query)s
        LIMIT %(fetch)s
    ), people AS (
        SELECT user_id, min(distance) AS distance
        FROM candidates
        GROUP BY user_id
        ORDER BY distance, user_id
        LIMIT %(k)s
    )
    SELECT p.user_id, (SELECT u.name FROM users u WHERE u.id = p.user_id), p.distance,
           (SELECT count(*) FROM candidates) AS fetched
    FROM people p
    ORDER BY p.distance, p.user_id"""


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: int
    name: str
    created_at: datetime
    updated_at: datetime
    face_count: int


@dataclass(frozen=True, slots=True)
class FaceRecord:
    id: int
    user_id: int
    model: str
    box: tuple[float, ...]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Match:
    """A person near a query; `distance` is the cosine distance 1 - cos to their nearest face, in [0, 2]."""

    user_id: int
    name: str
    distance: float


@dataclass(frozen=True, slots=True)
class GalleryStats:
    total_users: int
    total_faces: int
    model: str
    dim: int


@dataclass(frozen=True, slots=True)
class DatabaseHealth:
    """What the health probe found; `detail` says why when the state is not 'connected'."""

    state: Literal["connected", "unavailable", "refusing writes"]
    detail: str | None = None


@contextmanager
def _database_errors() -> Iterator[None]:
    """Connection failures, a server going away mid-query and pool timeouts are all 'unavailable';
    a full disk is said as such. The exception chained as the cause keeps PostgreSQL's message."""
    try:
        yield
    except pg_errors.DiskFull as exc:
        raise GalleryUnavailable(DISK_FULL) from exc
    except psycopg.OperationalError as exc:  # PoolTimeout and PoolClosed are OperationalErrors too
        raise GalleryUnavailable(UNAVAILABLE) from exc


def _pgvector_version(conn: psycopg.Connection) -> tuple[int, ...]:
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    assert row is not None  # the migrations create the extension
    return tuple(int(part) for part in row[0].split(".") if part.isdigit())


class Gallery:
    """People and their face embeddings of one model; thread-safe."""

    def __init__(self, pool: ConnectionPool, model: str, dim: int, dsn: str) -> None:
        """Use `Gallery.open`, which migrates the schema and checks the model first."""
        self._pool = pool
        self.model = model
        self.dim = dim
        self._dsn = dsn
        # Set when a write failed for a full disk, cleared by the next write that succeeds.
        self._refusing_writes = False
        self._health_lock = threading.Lock()
        self._health: tuple[float, DatabaseHealth] | None = None
        self._size: tuple[float, int] | None = None  # (when counted, people)

    @classmethod
    def from_settings(cls, dsn: str, model_name: str, dim: int, settings: Settings) -> Gallery:
        """`open` with the pool, timeout and search settings of `settings`: the API and the CLI
        open the gallery the same way."""
        return cls.open(
            dsn,
            model_name,
            dim,
            pool_min=settings.db_pool_min,
            pool_max=settings.db_pool_max,
            timeout=settings.db_timeout,
            ef_search=settings.hnsw_ef_search,
        )

    @classmethod
    def open(
        cls,
        dsn: str,
        model_name: str,
        dim: int,
        *,
        pool_min: int = 1,
        pool_max: int = 8,
        timeout: float = 5.0,
        ef_search: int = 200,
    ) -> Gallery:
        """Migrate the schema, check the recorded model and open the pool.

        Raises ModelMismatchError when the gallery holds another model's embeddings and
        GalleryUnavailable when the database cannot be reached within `timeout` seconds.
        """
        # libpq's connect_timeout is whole seconds, and values below 2 are raised to 2.
        connect_kwargs = {"connect_timeout": max(2, round(timeout)), "application_name": "facegate"}
        with _database_errors(), psycopg.connect(dsn, **connect_kwargs) as conn:
            applied = migrate(conn, model_name, dim)
            iterative_scans = _pgvector_version(conn) >= (0, 8)
        if applied:
            logger.info("gallery schema migrated to version %d", applied[-1])

        def configure(conn: psycopg.Connection) -> None:
            register_vector(conn)
            # Session settings, so that searches pay no extra round trip.
            conn.execute("SELECT set_config('hnsw.ef_search', %s, false)", (str(ef_search),))
            if iterative_scans:
                # An HNSW scan may then go on past ef_search candidates when grouping by person
                # needs more (pgvector >= 0.8; older versions reject the setting).
                conn.execute("SET hnsw.iterative_scan = relaxed_order")
            conn.commit()

        pool = ConnectionPool(
            dsn,
            min_size=pool_min,
            max_size=pool_max,
            kwargs=connect_kwargs,
            configure=configure,
            check=ConnectionPool.check_connection,
            timeout=timeout,
            reconnect_timeout=_RECONNECT_TIMEOUT_S,
            name="facegate-gallery",
            open=False,
        )
        with _database_errors():
            pool.open(wait=True, timeout=timeout)
        return cls(pool, model_name, dim, dsn)

    def close(self) -> None:
        self._pool.close()

    def transaction(self) -> AbstractContextManager[psycopg.Connection]:
        """A pooled connection in a transaction, for state kept beside the gallery (the rate limits)."""
        return self._transaction()

    @contextmanager
    def _transaction(self, *, write: bool = False) -> Iterator[psycopg.Connection]:
        """A pooled connection in a transaction: committed on success, rolled back on any exception.

        A `write` transaction records whether the disk refused it, for `health`.
        """
        try:
            with _database_errors(), self._pool.connection() as conn:
                yield conn
        except GalleryUnavailable as exc:
            if write and isinstance(exc.__cause__, pg_errors.DiskFull):
                self._refusing_writes = True
            raise
        if write:
            self._refusing_writes = False

    def ping(self) -> None:
        """Return when the database answers; raise GalleryUnavailable otherwise."""
        with self._transaction() as conn:
            conn.execute("SELECT 1")

    def health(self) -> DatabaseHealth:
        """Whether the database answers and takes writes, probed at most once per _HEALTH_TTL_S.

        Quick while the database is down (a failed connect to a local socket fails at once; a remote
        host that does not answer, within _PROBE_TIMEOUT_S).
        """
        with self._health_lock:
            now = time.monotonic()
            if self._health is None or now - self._health[0] >= _HEALTH_TTL_S:
                self._health = (now, self._probe())
            return self._health[1]

    def _probe(self) -> DatabaseHealth:
        try:
            with psycopg.connect(
                self._dsn,
                connect_timeout=_PROBE_TIMEOUT_S,
                application_name="facegate-health",
                options=f"-c statement_timeout={_PROBE_TIMEOUT_S * 1000}",
                autocommit=True,
            ) as conn:
                conn.execute("SELECT 1")
                if self._refusing_writes:
                    _probe_write(conn)
                    self._refusing_writes = False
        except pg_errors.DiskFull as exc:
            logger.warning("database health: %s", exc)
            return DatabaseHealth("refusing writes", DISK_FULL)
        except psycopg.Error as exc:
            logger.warning("database health: %s", exc)
            return DatabaseHealth("unavailable", UNAVAILABLE)
        return DatabaseHealth("connected")

    def add_user(self, name: str, embedding: np.ndarray, box: Sequence[float]) -> UserRecord:
        """Register a person with their first face, atomically.

        DuplicateNameError if the name is taken, ConfusableNameError if a registered name looks like
        it (the unique indexes decide, so two concurrent look-alikes cannot both get in).
        """
        vector = self._vector(embedding)
        skeleton = name_skeleton(name)
        try:
            with self._transaction(write=True) as conn:
                cursor = conn.cursor(row_factory=class_row(UserRecord))
                user = cursor.execute(
                    "INSERT INTO users (name, name_skeleton) VALUES (%s, %s) "
                    "RETURNING id, name, created_at, updated_at, 1 AS face_count",
                    (name, skeleton),
                ).fetchone()
                assert user is not None
                self._insert_face(conn, user.id, vector, box)
        except pg_errors.UniqueViolation as exc:
            raise self._name_conflict(name, skeleton) from exc
        self._size = None
        return user

    def _name_conflict(self, name: str, skeleton: str) -> DuplicateNameError | ConfusableNameError:
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT id, name FROM users WHERE name = %s OR name_skeleton = %s "
                "ORDER BY name = %s DESC LIMIT 1",
                (name, skeleton, name),
            ).fetchone()
        if row is None or row[1] == name:  # `None`: the other one was deleted meanwhile
            return DuplicateNameError(name)
        return ConfusableNameError(name, existing_name=row[1], existing_id=row[0])

    def add_face(self, user_id: int, embedding: np.ndarray, box: Sequence[float]) -> FaceRecord:
        """Store another face of a registered person. UnknownUserError if there is no such person."""
        vector = self._vector(embedding)
        with self._transaction(write=True) as conn:
            # Touching the row also locks it, so a concurrent delete cannot slip in before the insert.
            if conn.execute("UPDATE users SET updated_at = now() WHERE id = %s", (user_id,)).rowcount == 0:
                raise UnknownUserError(user_id)
            return self._insert_face(conn, user_id, vector, box)

    def _insert_face(
        self, conn: psycopg.Connection, user_id: int, vector: np.ndarray, box: Sequence[float]
    ) -> FaceRecord:
        row = conn.execute(
            "INSERT INTO faces (user_id, embedding, model, box) VALUES (%s, %s, %s, %s) "
            "RETURNING id, user_id, model, box, created_at",
            (user_id, vector, self.model, [float(v) for v in box]),
        ).fetchone()
        assert row is not None
        face_id, owner, model, stored_box, created_at = row
        return FaceRecord(face_id, owner, model, tuple(stored_box), created_at)

    def get_user(self, user_id: int) -> UserRecord:
        with self._transaction() as conn:
            user = (
                conn.cursor(row_factory=class_row(UserRecord))
                .execute(_SELECT_USERS + " WHERE u.id = %s", (user_id,))
                .fetchone()
            )
        if user is None:
            raise UnknownUserError(user_id)
        return user

    def list_users(self, offset: int, limit: int) -> tuple[list[UserRecord], int]:
        """One page of people in id order, and how many there are in all."""
        with self._transaction() as conn:
            total_row = conn.execute("SELECT count(*) FROM users").fetchone()
            users = (
                conn.cursor(row_factory=class_row(UserRecord))
                .execute(_SELECT_USERS + " ORDER BY u.id OFFSET %s LIMIT %s", (offset, limit))
                .fetchall()
            )
        assert total_row is not None
        return users, total_row[0]

    def delete_user(self, user_id: int) -> None:
        """Delete a person and (by the foreign key's cascade) all their faces."""
        with self._transaction(write=True) as conn:
            if conn.execute("DELETE FROM users WHERE id = %s", (user_id,)).rowcount == 0:
                raise UnknownUserError(user_id)
        self._size = None

    def size(self) -> int:
        """How many people the gallery holds (a count at most `_SIZE_TTL_S` old)."""
        now = time.monotonic()
        if self._size is not None and now - self._size[0] < _SIZE_TTL_S:
            return self._size[1]
        with self._transaction() as conn:
            row = conn.execute("SELECT count(*) FROM users").fetchone()
        assert row is not None
        self._size = (now, int(row[0]))
        return self._size[1]

    def search(self, embeddings: np.ndarray, k: int = 1) -> list[list[Match]]:
        """For each query row, the k nearest people (each at their nearest face), nearest first."""
        if k < 1:
            raise ValueError(f"k must be at least 1, not {k}")
        queries = self._vectors(embeddings)
        with self._transaction() as conn:
            return [self._nearest_people(conn, query, k) for query in queries]

    def _nearest_people(self, conn: psycopg.Connection, query: np.ndarray, k: int) -> list[Match]:
        fetch = max(_MIN_CANDIDATES, _FACES_PER_PERSON * k)
        while True:
            rows = conn.execute(_NEAREST_PEOPLE, {"query": query, "fetch": fetch, "k": k}).fetchall()
            # Fewer than k people although the candidate list was full: a few people own all the
            # candidates, so look further.
            if len(rows) >= k or not rows or rows[0][3] < fetch:
                return [Match(user_id, name, float(distance)) for user_id, name, distance, _ in rows]
            fetch *= 2

    def stats(self) -> GalleryStats:
        with self._transaction() as conn:
            row = conn.execute("SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM faces)").fetchone()
        assert row is not None
        return GalleryStats(total_users=row[0], total_faces=row[1], model=self.model, dim=self.dim)

    def _vector(self, embedding: np.ndarray) -> np.ndarray:
        vectors = self._vectors(embedding)
        if len(vectors) != 1:
            raise ValueError(f"expected one embedding, got {len(vectors)}")
        return vectors[0]

    def _vectors(self, embeddings: np.ndarray) -> np.ndarray:
        """`embeddings` as an (n, dim) float32 array; ValueError for a wrong shape, NaN/inf or a zero vector.

        A zero vector has no direction, so its cosine distance would be NaN.
        """
        array = np.asarray(embeddings, dtype=np.float32)
        if array.ndim == 1:
            array = array[np.newaxis]
        if array.ndim != 2 or array.shape[1] != self.dim:
            raise ValueError(f"expected embeddings of dimension {self.dim}, got shape {np.shape(embeddings)}")
        if not np.isfinite(array).all() or not np.linalg.norm(array, axis=1).all():
            raise ValueError("embeddings must be finite and non-zero")
        return array


def _probe_write(conn: psycopg.Connection) -> None:
    """A write that needs new disk space, rolled back: a temporary table's first page is a new file.

    Raises DiskFull while the disk is full. Run only after a real write was refused, so that the
    catalog does not churn with a temporary table per probe.
    """
    with conn.transaction(force_rollback=True):
        conn.execute("CREATE TEMPORARY TABLE facegate_write_probe (b bytea)")
        conn.execute("INSERT INTO facegate_write_probe VALUES (%s)", (bytes(8192),))
