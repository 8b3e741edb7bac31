"""The gallery: people, their face embeddings and nearest-person search, on PostgreSQL + pgvector.

Synchronous psycopg 3 on a connection pool: the API calls it from worker threads. Every method is
one transaction. Connection failures and pool timeouts become `GalleryUnavailable` (HTTP 503), with
a message fit for clients: PostgreSQL's own (socket and file paths) goes to the log only.
"""

from __future__ import annotations

import itertools
import logging
import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import psycopg
from pgvector import Vector
from pgvector.psycopg import register_vector
from psycopg import errors as pg_errors
from psycopg.rows import class_row
from psycopg_pool import ConnectionPool

from facegate.chips import FaceChip
from facegate.faces import Face
from facegate.gallery.errors import (
    ConfusableNameError,
    DuplicateCollectionError,
    DuplicateNameError,
    GalleryUnavailable,
    InvalidCollectionNameError,
    LastFaceError,
    ProtectedCollectionError,
    UnknownCollectionError,
    UnknownFaceError,
    UnknownUserError,
)
from facegate.gallery.schema import DEFAULT_COLLECTION, migrate
from facegate.names import name_skeleton

if TYPE_CHECKING:
    from facegate.config import Settings

logger = logging.getLogger(__name__)

# Search fetches this many faces per wanted person, so that people with several photos near the
# query still leave k distinct people; if they do not, it fetches twice as many and asks again.
_FACES_PER_PERSON = 4
_MIN_CANDIDATES = 10
# An import adding this many faces refreshes the planner's statistics itself.
_ANALYZE_AFTER_FACES = 1000

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

# The first key of the per-collection advisory lock (`Gallery.identity_lock`); the second is the
# collection's id folded into 32 bits (two collections sharing a lock only wait for each other).
# It keeps these locks apart from the migrations' single-key one.
_IDENTITY_LOCK = 0x46474944  # "FGID"

UNAVAILABLE = "the database is unavailable; retry shortly"
DISK_FULL = "the database refuses writes: its disk is full"

_SELECT_USERS = """
    SELECT u.id, u.name, u.created_at, u.updated_at,
           (SELECT count(*) FROM faces f WHERE f.user_id = u.id) AS face_count
    FROM users u"""

_SELECT_COLLECTIONS = """
    SELECT c.id, c.name, c.created_at,
           (SELECT count(*) FROM users u WHERE u.collection_id = c.id) AS people,
           (SELECT count(*) FROM faces f WHERE f.collection_id = c.id) AS faces
    FROM collections c"""

_FACE_COLUMNS = "f.id, f.user_id, f.model, f.box, f.created_at"

# relaxed_order iterative scans may return the candidates slightly out of order; the grouping
# re-sorts them, so only the candidate set matters. The name is a scalar subquery so that it is
# looked up by primary key for the k people only, never by joining the whole users table.
# The collection filter leaves the planner two ways (benchmarks/collections_bench.py, BENCHMARKS.md):
# the HNSW index with the filter applied as it goes, for a collection that is most of the table,
# or the b-tree on faces.collection_id and a sort of the collection's rows, exact, for a small one,
# where a filtered HNSW scan must visit ~1/selectivity times more tuples (~30x slower at 1%). The
# plan cache does not undo that once psycopg has prepared the query: on a connection that had
# served the big collection first, a small one's searches stayed as fast (measured there too).
_NEAREST_PEOPLE = """
    WITH candidates AS MATERIALIZED (
        SELECT user_id, embedding <=> %(query)s AS distance
        FROM faces
        WHERE collection_id = %(collection)s
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


# Collection names travel in URLs (`?collection=`) and in FACEGATE_API_KEYS (`name:scope:key:a|b`),
# so they hold none of `:`, `|`, `,`, `*`, spaces or anything that needs escaping.
COLLECTION_NAME_RULE = (
    "1 to 64 characters of A-Z, a-z, 0-9, '_', '-' and '.', starting with a letter or digit"
)
_COLLECTION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_SHOWN_CHARS = 80  # of an invalid name, in the error


def check_collection_name(name: str) -> str:
    """`name` if it is a valid collection name; InvalidCollectionNameError saying the rule otherwise."""
    if not _COLLECTION_NAME.fullmatch(name):
        shown = name if len(name) <= _SHOWN_CHARS else name[:_SHOWN_CHARS] + "…"  # not 5,000 echoed
        raise InvalidCollectionNameError(f"invalid collection name {shown!r}: {COLLECTION_NAME_RULE}")
    return name


@dataclass(frozen=True, slots=True)
class CollectionRecord:
    id: int
    name: str
    created_at: datetime
    people: int
    faces: int


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
    box: tuple[float, ...]  # x1, y1, x2, y2 in the photo's pixels
    created_at: datetime

    @property
    def box_size(self) -> tuple[float, float]:
        """The face box's width and height in pixels: how much detail the embedding came from."""
        x1, y1, x2, y2 = self.box
        return x2 - x1, y2 - y1


def _face_record(row: tuple[Any, ...]) -> FaceRecord:
    face_id, user_id, model, box, created_at = row
    return FaceRecord(face_id, user_id, model, tuple(box), created_at)


@dataclass(frozen=True, slots=True)
class PortableFace:
    """A face as an export file carries it: no ids, which mean nothing in another database."""

    embedding: np.ndarray  # float32, the gallery's dimension
    box: tuple[float, ...]
    created_at: datetime
    chip: FaceChip | None = None  # None when none was kept (FACEGATE_KEEP_FACES=false, older files)


@dataclass(frozen=True, slots=True)
class PortablePerson:
    name: str
    created_at: datetime
    faces: tuple[PortableFace, ...]


@dataclass(frozen=True, slots=True)
class ImportSummary:
    """What merging people into a collection did."""

    collection: str
    people_added: int
    people_merged: int  # already there by name: only the faces they lacked were added
    faces_added: int
    faces_skipped: int  # already stored for that person (the same embedding)


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

    def __init__(
        self, pool: ConnectionPool, model: str, dim: int, dsn: str, *, keep_chips: bool = True
    ) -> None:
        """Use `Gallery.open`, which migrates the schema and checks the model first."""
        self._pool = pool
        self.model = model
        self.dim = dim
        # FACEGATE_KEEP_FACES: whether the faces' chips given to add_user, add_face and merge_people
        # are stored (the one place of that rule) or dropped.
        self.keep_chips = keep_chips
        self._dsn = dsn
        # Set when a write failed for a full disk, cleared by the next write that succeeds.
        self._refusing_writes = False
        self._health_lock = threading.Lock()
        self._health: tuple[float, DatabaseHealth] | None = None
        self._sizes: dict[str, tuple[float, int]] = {}  # collection -> (when counted, people)
        # The connection of this thread's `identity_lock`, which every gallery call inside it uses.
        self._held: ContextVar[psycopg.Connection | None] = ContextVar(f"gallery-{id(self)}", default=None)

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
            keep_chips=settings.facegate_keep_faces,
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
        keep_chips: bool = True,
    ) -> Gallery:
        """Migrate the schema, check the recorded model and open the pool.

        Raises ModelMismatchError when the gallery holds another model's embeddings and
        GalleryUnavailable when the database cannot be reached within `timeout` seconds.
        """
        # libpq's connect_timeout is whole seconds, and values below 2 are raised to 2.
        connect_kwargs: dict[str, Any] = {
            "connect_timeout": max(2, round(timeout)),
            "application_name": "facegate",
        }
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
        return cls(pool, model_name, dim, dsn, keep_chips=keep_chips)

    def close(self) -> None:
        self._pool.close()

    def transaction(self) -> AbstractContextManager[psycopg.Connection]:
        """A pooled connection in a transaction, for state kept beside the gallery (the rate limits)."""
        return self._transaction()

    @contextmanager
    def identity_lock(self, collection: str) -> Iterator[None]:
        """One transaction holding the collection's identity lock: every gallery call made in it (by
        this thread) joins it, and commits or rolls back with it.

        What decides who a face or a name belongs to (the register duplicate check and insert, the
        add-face identity check and insert, rename, merge) runs under it, so that two such changes
        in one collection never interleave: two concurrent registrations of one new face under two
        names cannot both see the collection without the other. A transaction-scoped advisory lock
        rather than SERIALIZABLE: nothing to retry, and searches and recognition never wait for it.
        """
        if self._held.get() is not None:
            raise RuntimeError("identity_lock is not reentrant")
        with self._transaction(write=True) as conn:
            collection_id = self._collection_id(conn, collection, lock=True)
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_IDENTITY_LOCK, collection_id % 2**31))
            token = self._held.set(conn)
            try:
                yield
            finally:
                self._held.reset(token)

    @contextmanager
    def _transaction(self, *, write: bool = False) -> Iterator[psycopg.Connection]:
        """A pooled connection in a transaction: committed on success, rolled back on any exception.

        A `write` transaction records whether the disk refused it, for `health`. Inside an
        `identity_lock` it is a savepoint of the lock's transaction instead, so that a refused
        statement (a taken name) rolls back only itself.
        """
        held = self._held.get()
        if held is not None:
            with _database_errors(), held.transaction():
                yield held
            return
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

    # --- collections ------------------------------------------------------------------------------

    def create_collection(self, name: str) -> CollectionRecord:
        """A new, empty collection. InvalidCollectionNameError, DuplicateCollectionError."""
        check_collection_name(name)
        try:
            with self._transaction(write=True) as conn:
                row = conn.execute(
                    "INSERT INTO collections (name) VALUES (%s) RETURNING id, name, created_at", (name,)
                ).fetchone()
        except pg_errors.UniqueViolation as exc:
            raise DuplicateCollectionError(name) from exc
        assert row is not None
        collection_id, stored_name, created_at = row
        return CollectionRecord(collection_id, stored_name, created_at, people=0, faces=0)

    def list_collections(self) -> list[CollectionRecord]:
        """Every collection with how many people and faces it holds, by name."""
        with self._transaction() as conn:
            cursor = conn.cursor(row_factory=class_row(CollectionRecord))
            return cursor.execute(_SELECT_COLLECTIONS + " ORDER BY c.name").fetchall()

    def require_collection(self, name: str) -> None:
        """UnknownCollectionError unless the collection exists: one lookup by its unique name, for
        the check before a request's work (get_collection also counts its people and faces)."""
        with self._transaction() as conn:
            self._collection_id(conn, name)

    def get_collection(self, name: str) -> CollectionRecord:
        with self._transaction() as conn:
            cursor = conn.cursor(row_factory=class_row(CollectionRecord))
            record = cursor.execute(_SELECT_COLLECTIONS + " WHERE c.name = %s", (name,)).fetchone()
        if record is None:
            raise UnknownCollectionError(name)
        return record

    def delete_collection(self, name: str) -> None:
        """Delete a collection with its people and their faces (the foreign keys cascade).

        ProtectedCollectionError for `default`, which clients that name no collection rely on.
        """
        if name == DEFAULT_COLLECTION:
            raise ProtectedCollectionError(name)
        with self._transaction(write=True) as conn:
            if conn.execute("DELETE FROM collections WHERE name = %s", (name,)).rowcount == 0:
                raise UnknownCollectionError(name)
        self._sizes.clear()

    def _collection_id(self, conn: psycopg.Connection, collection: str, *, lock: bool = False) -> int:
        """The id of the named collection; UnknownCollectionError if there is none. `lock` holds it
        until the transaction ends, so that a concurrent delete_collection waits for a write."""
        query = "SELECT id FROM collections WHERE name = %s" + (" FOR KEY SHARE" if lock else "")
        row = conn.execute(query, (collection,)).fetchone()
        if row is None:
            raise UnknownCollectionError(collection)
        return int(row[0])

    # --- people and faces ---------------------------------------------------------------------------

    def add_user(
        self,
        name: str,
        embedding: np.ndarray,
        box: Sequence[float],
        collection: str = DEFAULT_COLLECTION,
        *,
        chip: FaceChip | None = None,
    ) -> UserRecord:
        """Register a person with their first face (and its chip, if kept), atomically.

        `name` as names.clean_name returns it. DuplicateNameError if the name is taken in the
        collection, ConfusableNameError if a name registered there looks like it (the unique indexes
        decide, so two concurrent look-alikes cannot both get in); UnknownCollectionError.
        """
        vector = self._vector(embedding)
        skeleton = name_skeleton(name)
        try:
            with self._transaction(write=True) as conn:
                collection_id = self._collection_id(conn, collection, lock=True)
                cursor = conn.cursor(row_factory=class_row(UserRecord))
                user = cursor.execute(
                    "INSERT INTO users (collection_id, name, name_skeleton) VALUES (%s, %s, %s) "
                    "RETURNING id, name, created_at, updated_at, 1 AS face_count",
                    (collection_id, name, skeleton),
                ).fetchone()
                assert user is not None
                self._insert_face(conn, user.id, collection_id, vector, box, chip)
        except pg_errors.UniqueViolation as exc:
            raise self._name_conflict(name, skeleton, collection) from exc
        self._sizes.clear()
        return user

    def rename_user(self, user_id: int, name: str, collection: str = DEFAULT_COLLECTION) -> UserRecord:
        """Give a person another name, under the same rules as add_user (DuplicateNameError,
        ConfusableNameError against the others in the collection); UnknownUserError."""
        skeleton = name_skeleton(name)
        try:
            with self._transaction(write=True) as conn:
                collection_id = self._collection_id(conn, collection)
                cursor = conn.cursor(row_factory=class_row(UserRecord))
                user = cursor.execute(
                    "UPDATE users u SET name = %s, name_skeleton = %s, updated_at = now() "
                    "WHERE id = %s AND collection_id = %s "
                    "RETURNING u.id, u.name, u.created_at, u.updated_at, "
                    "(SELECT count(*) FROM faces f WHERE f.user_id = u.id) AS face_count",
                    (name, skeleton, user_id, collection_id),
                ).fetchone()
        except pg_errors.UniqueViolation as exc:
            raise self._name_conflict(name, skeleton, collection, renamed=user_id) from exc
        if user is None:
            raise UnknownUserError(user_id)
        return user

    def _name_conflict(
        self, name: str, skeleton: str, collection: str, renamed: int | None = None
    ) -> DuplicateNameError | ConfusableNameError:
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT u.id, u.name FROM users u JOIN collections c ON c.id = u.collection_id "
                "WHERE c.name = %s AND (u.name = %s OR u.name_skeleton = %s) AND u.id IS DISTINCT FROM %s "
                "ORDER BY u.name = %s DESC LIMIT 1",
                (collection, name, skeleton, renamed, name),
            ).fetchone()
        if row is None or row[1] == name:  # `None`: the other one was deleted meanwhile
            return DuplicateNameError(name)
        return ConfusableNameError(name, existing_name=row[1], existing_id=row[0])

    def add_face(
        self,
        user_id: int,
        embedding: np.ndarray,
        box: Sequence[float],
        collection: str = DEFAULT_COLLECTION,
        *,
        chip: FaceChip | None = None,
    ) -> FaceRecord:
        """Store another face (and its chip, if kept) of a registered person. UnknownUserError if
        there is no such person in the collection."""
        vector = self._vector(embedding)
        with self._transaction(write=True) as conn:
            collection_id = self._collection_id(conn, collection)
            self._lock_user(conn, user_id, collection_id, touch=True)
            return self._insert_face(conn, user_id, collection_id, vector, box, chip)

    def merge_users(self, target_id: int, source_id: int, collection: str = DEFAULT_COLLECTION) -> int:
        """Move every face of `source_id` to `target_id` and delete `source_id`, in one transaction;
        the target keeps its name. Return how many faces moved. UnknownUserError for either id (both
        must be in the collection); ValueError for one person twice."""
        if target_id == source_id:
            raise ValueError(f"user {target_id} cannot be merged into themselves")
        with self._transaction(write=True) as conn:
            collection_id = self._collection_id(conn, collection, lock=True)
            # Both rows locked in id order, so that two opposite merges cannot deadlock.
            for user_id in sorted((target_id, source_id)):
                self._lock_user(conn, user_id, collection_id, touch=user_id == target_id)
            moved = conn.execute(
                "UPDATE faces SET user_id = %s WHERE user_id = %s", (target_id, source_id)
            ).rowcount
            conn.execute("DELETE FROM users WHERE id = %s", (source_id,))
        self._sizes.clear()
        return moved

    def _lock_user(self, conn: psycopg.Connection, user_id: int, collection_id: int, *, touch: bool) -> None:
        """Lock the person's row till the transaction ends, so that a concurrent delete (of them or
        of a face) cannot slip in; `touch` also marks them updated. UnknownUserError."""
        query = (
            "UPDATE users SET updated_at = now() WHERE id = %s AND collection_id = %s"
            if touch
            else "SELECT 1 FROM users WHERE id = %s AND collection_id = %s FOR UPDATE"
        )
        if conn.execute(query, (user_id, collection_id)).rowcount == 0:
            raise UnknownUserError(user_id)

    def _insert_face(
        self,
        conn: psycopg.Connection,
        user_id: int,
        collection_id: int,
        vector: np.ndarray,
        box: Sequence[float],
        chip: FaceChip | None,
    ) -> FaceRecord:
        row = conn.execute(
            "INSERT INTO faces AS f (user_id, collection_id, embedding, model, box) "
            "VALUES (%s, %s, %s, %s, %s) "
            "RETURNING " + _FACE_COLUMNS,
            (user_id, collection_id, vector, self.model, [float(v) for v in box]),
        ).fetchone()
        assert row is not None
        face = _face_record(row)
        self._insert_chips(conn, [(face.id, chip)])
        return face

    def _insert_chips(self, conn: psycopg.Connection, chips: Sequence[tuple[int, FaceChip | None]]) -> None:
        """Store the faces' chips beside them, unless FACEGATE_KEEP_FACES=false."""
        rows = [(face_id, *_chip_values(chip)) for face_id, chip in chips if chip is not None]
        if self.keep_chips and rows:
            with conn.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO face_chips (face_id, jpeg, box, keypoints, score) "
                    "VALUES (%s, %s, %s, %s, %s)",
                    rows,
                )

    def list_faces(self, user_id: int, collection: str = DEFAULT_COLLECTION) -> list[FaceRecord]:
        """A person's faces in the order they were added. UnknownUserError."""
        with self._transaction() as conn:
            collection_id = self._collection_id(conn, collection)
            rows = conn.execute(
                "SELECT " + _FACE_COLUMNS + ", u.id FROM users u LEFT JOIN faces f ON f.user_id = u.id "
                "WHERE u.id = %s AND u.collection_id = %s ORDER BY f.id",
                (user_id, collection_id),
            ).fetchall()
        if not rows:
            raise UnknownUserError(user_id)
        return [_face_record(row[:-1]) for row in rows if row[0] is not None]

    def delete_face(self, user_id: int, face_id: int, collection: str = DEFAULT_COLLECTION) -> int:
        """Delete one face of a person; return how many they have left. UnknownUserError,
        UnknownFaceError, and LastFaceError for their only face (a person without faces could never
        be recognised: delete them instead)."""
        with self._transaction(write=True) as conn:
            collection_id = self._collection_id(conn, collection)
            self._lock_user(conn, user_id, collection_id, touch=False)
            faces = [row[0] for row in conn.execute("SELECT id FROM faces WHERE user_id = %s", (user_id,))]
            if face_id not in faces:
                raise UnknownFaceError(user_id, face_id)
            if len(faces) == 1:
                raise LastFaceError(user_id, face_id)
            conn.execute("DELETE FROM faces WHERE id = %s", (face_id,))
            conn.execute("UPDATE users SET updated_at = now() WHERE id = %s", (user_id,))
        return len(faces) - 1

    def get_user(self, user_id: int, collection: str = DEFAULT_COLLECTION) -> UserRecord:
        with self._transaction() as conn:
            collection_id = self._collection_id(conn, collection)
            user = (
                conn.cursor(row_factory=class_row(UserRecord))
                .execute(
                    _SELECT_USERS + " WHERE u.id = %s AND u.collection_id = %s", (user_id, collection_id)
                )
                .fetchone()
            )
        if user is None:
            raise UnknownUserError(user_id)
        return user

    def list_users(
        self, offset: int, limit: int, collection: str = DEFAULT_COLLECTION
    ) -> tuple[list[UserRecord], int]:
        """One page of the collection's people in id order, and how many there are in all."""
        with self._transaction() as conn:
            collection_id = self._collection_id(conn, collection)
            total_row = conn.execute(
                "SELECT count(*) FROM users WHERE collection_id = %s", (collection_id,)
            ).fetchone()
            users = (
                conn.cursor(row_factory=class_row(UserRecord))
                .execute(
                    _SELECT_USERS + " WHERE u.collection_id = %s ORDER BY u.id OFFSET %s LIMIT %s",
                    (collection_id, offset, limit),
                )
                .fetchall()
            )
        assert total_row is not None
        return users, total_row[0]

    def delete_user(self, user_id: int, collection: str = DEFAULT_COLLECTION) -> None:
        """Delete a person and (by the foreign key's cascade) all their faces."""
        with self._transaction(write=True) as conn:
            collection_id = self._collection_id(conn, collection)
            deleted = conn.execute(
                "DELETE FROM users WHERE id = %s AND collection_id = %s", (user_id, collection_id)
            )
            if deleted.rowcount == 0:
                raise UnknownUserError(user_id)
        self._sizes.clear()

    def size(self, collection: str = DEFAULT_COLLECTION) -> int:
        """How many people the collection holds (a count at most `_SIZE_TTL_S` old)."""
        now = time.monotonic()
        counted = self._sizes.get(collection)
        if counted is not None and now - counted[0] < _SIZE_TTL_S:
            return counted[1]
        with self._transaction() as conn:
            collection_id = self._collection_id(conn, collection)
            row = conn.execute(
                "SELECT count(*) FROM users WHERE collection_id = %s", (collection_id,)
            ).fetchone()
        assert row is not None
        self._sizes[collection] = (now, int(row[0]))
        return int(row[0])

    # --- search -------------------------------------------------------------------------------------

    def search(
        self, embeddings: np.ndarray, k: int = 1, collection: str = DEFAULT_COLLECTION
    ) -> list[list[Match]]:
        """For each query row, the k nearest distinct people of the collection (each at their
        nearest face), nearest first. `search(embedding, k=1, collection=...)` is also the
        register duplicate guard's query: the nearest person of the collection, by the HNSW index."""
        if k < 1:
            raise ValueError(f"k must be at least 1, not {k}")
        queries = self._vectors(embeddings)
        with self._transaction() as conn:
            collection_id = self._collection_id(conn, collection)
            return [self._nearest_people(conn, query, k, collection_id) for query in queries]

    def _nearest_people(
        self, conn: psycopg.Connection, query: np.ndarray, k: int, collection_id: int
    ) -> list[Match]:
        fetch = max(_MIN_CANDIDATES, _FACES_PER_PERSON * k)
        while True:
            rows = conn.execute(
                _NEAREST_PEOPLE, {"query": query, "fetch": fetch, "k": k, "collection": collection_id}
            ).fetchall()
            # Fewer than k people although the candidate list was full: a few people own all the
            # candidates, so look further.
            if len(rows) >= k or not rows or rows[0][3] < fetch:
                return [Match(user_id, name, float(distance)) for user_id, name, distance, _ in rows]
            fetch *= 2

    def nearest_face_distance(
        self, user_id: int, embedding: np.ndarray, collection: str = DEFAULT_COLLECTION
    ) -> float:
        """The cosine distance from `embedding` to the person's nearest face, exactly (their faces
        are few): the add-face identity guard's measure. UnknownUserError."""
        vector = self._vector(embedding)
        with self._transaction() as conn:
            collection_id = self._collection_id(conn, collection)
            row = conn.execute(
                "SELECT min(embedding <=> %s) FROM faces WHERE user_id = %s AND collection_id = %s",
                (vector, user_id, collection_id),
            ).fetchone()
        if row is None or row[0] is None:  # every person has a face: no row means no such person here
            raise UnknownUserError(user_id)
        return float(row[0])

    # --- export and import (the file format is facegate.gallery.transfer's) ------------------------

    def export_people(self, collection: str = DEFAULT_COLLECTION) -> list[PortablePerson]:
        """Everyone in the collection with their faces, in id order, read in one snapshot."""
        with self._transaction() as conn:
            collection_id = self._collection_id(conn, collection)
            rows = conn.execute(
                "SELECT u.id, u.name, u.created_at, f.embedding, f.box, f.created_at, "
                "c.jpeg, c.box, c.keypoints, c.score "
                "FROM users u JOIN faces f ON f.user_id = u.id LEFT JOIN face_chips c ON c.face_id = f.id "
                "WHERE u.collection_id = %s ORDER BY u.id, f.id",
                (collection_id,),
                binary=True,  # the vectors as stored, bit for bit, not printed and parsed again
            ).fetchall()
        people = []
        for _, group in itertools.groupby(rows, key=lambda row: row[0]):
            faces = list(group)
            _, name, created_at = faces[0][:3]
            portable = tuple(
                PortableFace(_array(row[3]), tuple(row[4]), row[5], chip_from_row(*row[6:])) for row in faces
            )
            people.append(PortablePerson(name, created_at, portable))
        return people

    def merge_people(
        self, people: Sequence[PortablePerson], collection: str = DEFAULT_COLLECTION, *, create: bool = False
    ) -> ImportSummary:
        """Add people to the collection by name, in one transaction, keeping their dates.

        A name already there is the same person: they get only the faces they lack (a face with the
        very same embedding is not stored twice), so merging the same people again changes nothing.
        `create` makes a missing collection. DuplicateNameError or ConfusableNameError (a new name
        that looks like one there) roll the whole merge back; UnknownCollectionError without `create`.
        """
        vectors = [[self._vector(face.embedding) for face in person.faces] for person in people]
        if any(not person_vectors for person_vectors in vectors):
            raise ValueError("every person needs at least one face")
        counts = {"people_added": 0, "people_merged": 0, "faces_added": 0, "faces_skipped": 0}
        name = ""
        try:
            with self._transaction(write=True) as conn:
                if create:
                    conn.execute(
                        "INSERT INTO collections (name) VALUES (%s) ON CONFLICT (name) DO NOTHING",
                        (check_collection_name(collection),),
                    )
                collection_id = self._collection_id(conn, collection, lock=True)
                for person, person_vectors in zip(people, vectors, strict=True):
                    name = person.name
                    self._merge_person(conn, collection_id, person, person_vectors, counts)
        except pg_errors.UniqueViolation as exc:
            raise self._name_conflict(name, name_skeleton(name), collection) from exc
        self._sizes.clear()
        if counts["faces_added"] >= _ANALYZE_AFTER_FACES:
            with self._transaction(write=True) as conn:
                # At once rather than when autovacuum comes by: how many faces each collection has
                # decides the search plan (_NEAREST_PEOPLE).
                conn.execute("ANALYZE faces")
        return ImportSummary(collection, **counts)

    def _merge_person(
        self,
        conn: psycopg.Connection,
        collection_id: int,
        person: PortablePerson,
        vectors: list[np.ndarray],
        counts: dict[str, int],
    ) -> None:
        row = conn.execute(
            "SELECT id FROM users WHERE collection_id = %s AND name = %s FOR UPDATE",
            (collection_id, person.name),
        ).fetchone()
        if row is None:
            inserted = conn.execute(
                "INSERT INTO users (collection_id, name, name_skeleton, created_at, updated_at) "
                "VALUES (%s, %s, %s, %s, %s) RETURNING id",
                (
                    collection_id,
                    person.name,
                    name_skeleton(person.name),
                    person.created_at,
                    person.created_at,
                ),
            ).fetchone()
            assert inserted is not None
            user_id, stored = inserted[0], set()
            counts["people_added"] += 1
        else:
            user_id = row[0]
            faces = conn.execute("SELECT embedding FROM faces WHERE user_id = %s", (user_id,), binary=True)
            stored = {_array(vector).tobytes() for (vector,) in faces}
            counts["people_merged"] += 1
        new, chips = [], []
        for vector, face in zip(vectors, person.faces, strict=True):
            if vector.tobytes() not in stored:
                stored.add(vector.tobytes())
                new.append(
                    (
                        user_id,
                        collection_id,
                        vector,
                        self.model,
                        [float(v) for v in face.box],
                        face.created_at,
                    )
                )
                chips.append(face.chip)
        counts["faces_added"] += len(new)
        counts["faces_skipped"] += len(vectors) - len(new)
        if new:
            with conn.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO faces (user_id, collection_id, embedding, model, box, created_at) "
                    "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                    new,
                    returning=True,
                )
                face_ids = []
                while True:
                    face_ids.append(_one(cursor.fetchone()))
                    if not cursor.nextset():
                        break
            self._insert_chips(conn, list(zip(face_ids, chips, strict=True)))
            if row is not None:
                conn.execute("UPDATE users SET updated_at = now() WHERE id = %s", (user_id,))

    def stats(self, collection: str = DEFAULT_COLLECTION) -> GalleryStats:
        record = self.get_collection(collection)
        return GalleryStats(
            total_users=record.people, total_faces=record.faces, model=self.model, dim=self.dim
        )

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


def _one(row: tuple[Any, ...] | None) -> Any:
    assert row is not None
    return row[0]


def _chip_values(chip: FaceChip) -> tuple[bytes, list[float], list[float], float]:
    """A chip as face_chips' jpeg, box, keypoints (x1, y1, ..., x5, y5) and score columns."""
    face = chip.face
    keypoints = [float(v) for v in np.asarray(face.keypoints).ravel()]
    return chip.jpeg, [float(v) for v in face.box], keypoints, float(face.score)


def chip_from_row(
    jpeg: bytes | None, box: Sequence[float] | None, keypoints: Sequence[float] | None, score: float | None
) -> FaceChip | None:
    """The chip of face_chips' columns; None for a face without one (the columns of an outer join)."""
    if jpeg is None or box is None or keypoints is None or score is None:
        return None
    x1, y1, x2, y2 = (float(v) for v in box)
    points = np.asarray(keypoints, dtype=np.float32).reshape(5, 2)
    return FaceChip(bytes(jpeg), Face((x1, y1, x2, y2), float(score), points))


def _array(vector: Vector) -> np.ndarray:
    return np.asarray(vector.to_numpy(), dtype=np.float32)


def _probe_write(conn: psycopg.Connection) -> None:
    """A write that needs new disk space, rolled back: a temporary table's first page is a new file.

    Raises DiskFull while the disk is full. Run only after a real write was refused, so that the
    catalog does not churn with a temporary table per probe.
    """
    with conn.transaction(force_rollback=True):
        conn.execute("CREATE TEMPORARY TABLE facegate_write_probe (b bytea)")
        conn.execute("INSERT INTO facegate_write_probe VALUES (%s)", (bytes(8192),))
