"""Schema migrations, applied at start-up, and the record of which embedding model the gallery holds.

Every migration runs once, in order, inside one transaction that holds an advisory lock, so several
workers starting together neither race nor apply a step twice. DDL is transactional in PostgreSQL:
a failed start-up leaves the schema as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg import sql

from facegate.gallery.errors import ModelMismatchError
from facegate.names import name_skeleton

logger = logging.getLogger(__name__)

# Any constant works; it only has to be the same in every process using the database.
_MIGRATION_LOCK = 0x46616365_47617465  # "FaceGate"

# HNSW build parameters, chosen with benchmarks/search_bench.py on real dlib embeddings plus
# distractors fitted to them: at equal search time m=32, ef_construction=128 finds the exact nearest
# person far more often than pgvector's default m=16, ef_construction=64 (1M people: recall@1 0.97
# against 0.87 at ~13 ms; 100k: 0.999 against 0.985), for twice the build time and a 25% larger index.
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 128
HNSW_INDEX = "faces_embedding_hnsw_idx"
NAME_SKELETON_INDEX = "users_name_skeleton_key"
# Migration 4 scopes the name rules to a collection: these replace `users_name_key` and the index above.
COLLECTION_NAME_KEY = "users_collection_name_key"
COLLECTION_SKELETON_INDEX = "users_collection_skeleton_key"
DEFAULT_COLLECTION = "default"


Statement = sql.SQL | sql.Composed  # what Connection.execute takes of psycopg's composables


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    statements: Callable[[int], list[Statement]]  # the embedding dimension -> SQL statements
    then: Callable[[psycopg.Connection], None] | None = None  # a step in Python, after the statements


def _initial_schema(dim: int) -> list[Statement]:
    return [
        sql.SQL(
            """CREATE TABLE users (
                id bigserial PRIMARY KEY,
                name text NOT NULL UNIQUE,
                created_at timestamptz NOT NULL DEFAULT now(),
                updated_at timestamptz NOT NULL DEFAULT now()
            )"""
        ),
        sql.SQL(
            """CREATE TABLE faces (
                id bigserial PRIMARY KEY,
                user_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
                embedding vector({dim}) NOT NULL,
                model text NOT NULL,
                box real[] NOT NULL,
                created_at timestamptz NOT NULL DEFAULT now()
            )"""
        ).format(dim=sql.Literal(dim)),
        sql.SQL("CREATE INDEX faces_user_id_idx ON faces (user_id)"),
        # HNSW, unlike IVFFlat, needs no data to build a good index, so it can exist from the start.
        hnsw_index(),
        sql.SQL(
            """CREATE TABLE gallery_meta (
                singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
                model text NOT NULL,
                dim integer NOT NULL,
                created_at timestamptz NOT NULL DEFAULT now()
            )"""
        ),
    ]


def hnsw_index() -> Statement:
    """The search index on faces.embedding (built again by `facegate reembed` for a new model)."""
    return sql.SQL(
        "CREATE INDEX {index} ON faces USING hnsw (embedding vector_cosine_ops) "
        "WITH (m = {m}, ef_construction = {ef})"
    ).format(index=sql.Identifier(HNSW_INDEX), m=sql.Literal(HNSW_M), ef=sql.Literal(HNSW_EF_CONSTRUCTION))


def _skeleton_column(_: int) -> list[Statement]:
    return [sql.SQL("ALTER TABLE users ADD COLUMN name_skeleton text")]


def _fill_skeletons(conn: psycopg.Connection) -> None:
    """Compute the skeletons of the names already registered, then make them unique."""
    _assign_skeletons(conn, "SELECT id, 0, name FROM users ORDER BY id")
    conn.execute(f"CREATE UNIQUE INDEX {NAME_SKELETON_INDEX} ON users (name_skeleton)")


def _refill_skeletons(conn: psycopg.Connection) -> None:
    """The skeletons again, per collection, under today's rule (`names.name_skeleton`: NFKC and
    whitespace folded first), then unique per collection again."""
    _assign_skeletons(conn, "SELECT id, collection_id, name FROM users ORDER BY id")
    conn.execute(
        sql.SQL("CREATE UNIQUE INDEX {} ON users (collection_id, name_skeleton)").format(
            sql.Identifier(COLLECTION_SKELETON_INDEX)
        )
    )


def _assign_skeletons(conn: psycopg.Connection, query: str) -> None:
    """Give each user of `query` (id, scope, name; in registration order) its name's skeleton,
    unique within the scope. Look-alikes registered before a rule existed keep their rows: the
    later one gets no skeleton (a NULL, which the unique index allows) and is named in the log."""
    owners: dict[tuple[int, str], tuple[int, str]] = {}
    updates: list[tuple[str | None, int]] = []
    for user_id, scope, name in conn.execute(query).fetchall():
        key = (scope, name_skeleton(name))
        if key in owners:
            first_id, first_name = owners[key]
            logger.warning(
                "user %d %r looks like user %d %r; both stay registered, but rename one to tell them apart",
                user_id, name, first_id, first_name,
            )  # fmt: skip
            updates.append((None, user_id))
            continue
        owners[key] = (user_id, name)
        updates.append((key[1], user_id))
    with conn.cursor() as cursor:
        cursor.executemany("UPDATE users SET name_skeleton = %s WHERE id = %s", updates)


def _drop_collection_skeletons(_: int) -> list[Statement]:
    return [sql.SQL("DROP INDEX {}").format(sql.Identifier(COLLECTION_SKELETON_INDEX))]


def _rate_buckets(_: int) -> list[Statement]:
    # The API's shared rate limits (api/ratelimit.py), one row per key. UNLOGGED: no WAL for a write
    # on every request; after a crash the buckets start full again, which is harmless.
    return [
        sql.SQL(
            """CREATE UNLOGGED TABLE rate_buckets (
                key_name text PRIMARY KEY,
                tokens double precision NOT NULL,
                updated double precision NOT NULL,
                granted boolean NOT NULL
            )"""
        )
    ]


def _collections(_: int) -> list[Statement]:
    """Collections, and the people of the gallery so far in the one named `default`.

    The new columns are added with the default collection's id as their DEFAULT, a constant: that is
    PostgreSQL's fast path, without rewriting the tables; an UPDATE of every face would insert each
    into the HNSW index again. The default is dropped afterwards, so new rows must name a collection.
    `faces.collection_id` repeats the owner's collection so that a search filters the face rows
    themselves (one HNSW index with a filter, BENCHMARKS.md); the composite foreign key keeps the
    two equal.
    """
    default = sql.Literal(DEFAULT_COLLECTION)
    return [
        sql.SQL(
            """CREATE TABLE collections (
                id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                name text NOT NULL UNIQUE,
                created_at timestamptz NOT NULL DEFAULT now()
            )"""
        ),
        sql.SQL("INSERT INTO collections (id, name) VALUES (1, {})").format(default),
        sql.SQL("SELECT setval(pg_get_serial_sequence('collections', 'id'), 1)"),
        sql.SQL(
            "ALTER TABLE users ADD COLUMN collection_id bigint NOT NULL DEFAULT 1 "
            "REFERENCES collections (id) ON DELETE CASCADE"
        ),
        sql.SQL("ALTER TABLE users ALTER COLUMN collection_id DROP DEFAULT"),
        sql.SQL("ALTER TABLE users DROP CONSTRAINT users_name_key"),
        sql.SQL("ALTER TABLE users ADD CONSTRAINT {} UNIQUE (collection_id, name)").format(
            sql.Identifier(COLLECTION_NAME_KEY)
        ),
        sql.SQL("DROP INDEX {}").format(sql.Identifier(NAME_SKELETON_INDEX)),
        sql.SQL("CREATE UNIQUE INDEX {} ON users (collection_id, name_skeleton)").format(
            sql.Identifier(COLLECTION_SKELETON_INDEX)
        ),
        sql.SQL("ALTER TABLE users ADD CONSTRAINT users_id_collection_key UNIQUE (id, collection_id)"),
        sql.SQL("ALTER TABLE faces ADD COLUMN collection_id bigint NOT NULL DEFAULT 1"),
        sql.SQL("ALTER TABLE faces ALTER COLUMN collection_id DROP DEFAULT"),
        sql.SQL("ALTER TABLE faces DROP CONSTRAINT faces_user_id_fkey"),
        sql.SQL(
            "ALTER TABLE faces ADD CONSTRAINT faces_user_collection_fkey "
            "FOREIGN KEY (user_id, collection_id) "
            "REFERENCES users (id, collection_id) ON DELETE CASCADE"
        ),
        sql.SQL("CREATE INDEX faces_collection_id_idx ON faces (collection_id)"),
    ]


def _face_chips(_: int) -> list[Statement]:
    """Each face's aligned chip (facegate.chips), from which `facegate reembed` embeds it again
    under another model. Deleting a face, and so a person or a collection, deletes its chip.

    `reembed_vectors` holds the new vectors while `facegate reembed` computes them, beside the
    faces' own, which stay in use until it swaps them in (facegate.gallery.reembed); it is empty
    otherwise. Its vectors have no fixed dimension: each run's model decides it.
    """
    return [
        sql.SQL(
            """CREATE TABLE face_chips (
                face_id bigint PRIMARY KEY REFERENCES faces (id) ON DELETE CASCADE,
                jpeg bytea NOT NULL,
                box real[] NOT NULL,
                keypoints real[] NOT NULL,
                score real NOT NULL,
                created_at timestamptz NOT NULL DEFAULT now()
            )"""
        ),
        sql.SQL(
            """CREATE TABLE reembed_vectors (
                face_id bigint PRIMARY KEY REFERENCES faces (id) ON DELETE CASCADE,
                model text NOT NULL,
                embedding vector NOT NULL
            )"""
        ),
    ]


def _events(_: int) -> list[Statement]:
    # The access log (facegate.events). No foreign key on user_id: an event outlives the person (it
    # keeps the name they had), and a person deleted while their event waits to be written must not
    # fail the batch it is in. A merge moves the references itself.
    return [
        sql.SQL(
            """CREATE TABLE events (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                at timestamptz NOT NULL,
                collection_id bigint NOT NULL REFERENCES collections (id) ON DELETE CASCADE,
                source text NOT NULL,
                key_name text,
                status text NOT NULL,
                user_id bigint,
                user_name text,
                distance real,
                similarity real,
                threshold real NOT NULL,
                threshold_source text NOT NULL,
                quality text,
                box real[] NOT NULL,
                chip bytea
            )"""
        ),
        sql.SQL("CREATE INDEX events_collection_id_idx ON events (collection_id, id)"),
        sql.SQL("CREATE INDEX events_at_idx ON events (at)"),
        sql.SQL("CREATE INDEX events_user_id_idx ON events (user_id, id) WHERE user_id IS NOT NULL"),
    ]


def _visitors(dim: int) -> list[Statement]:
    # Unknown visitors (facegate.visitors): faces no one matched, grouped by likeness, with their
    # best few chips and vectors. A collection's visitors are few (the exact scan needs no index).
    return [
        sql.SQL(
            """CREATE TABLE visitors (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                collection_id bigint NOT NULL REFERENCES collections (id) ON DELETE CASCADE,
                first_seen timestamptz NOT NULL,
                last_seen timestamptz NOT NULL,
                visits integer NOT NULL
            )"""
        ),
        sql.SQL("CREATE INDEX visitors_collection_id_idx ON visitors (collection_id, last_seen)"),
        sql.SQL(
            """CREATE TABLE visitor_faces (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                visitor_id bigint NOT NULL REFERENCES visitors (id) ON DELETE CASCADE,
                collection_id bigint NOT NULL REFERENCES collections (id) ON DELETE CASCADE,
                embedding vector({dim}) NOT NULL,
                detail real NOT NULL,
                chip bytea NOT NULL,
                chip_box real[] NOT NULL,
                chip_keypoints real[] NOT NULL,
                score real NOT NULL,
                seen_at timestamptz NOT NULL
            )"""
        ).format(dim=sql.Literal(dim)),
        sql.SQL("CREATE INDEX visitor_faces_collection_id_idx ON visitor_faces (collection_id)"),
        sql.SQL("CREATE INDEX visitor_faces_visitor_id_idx ON visitor_faces (visitor_id)"),
        # No foreign key: forgetting a visitor keeps the events, which then name no visitor.
        sql.SQL("ALTER TABLE events ADD COLUMN visitor_id bigint"),
        sql.SQL("CREATE INDEX events_visitor_id_idx ON events (visitor_id) WHERE visitor_id IS NOT NULL"),
    ]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "users, faces with an HNSW index, gallery_meta", _initial_schema),
    Migration(2, "users.name_skeleton: look-alike names are one name", _skeleton_column, _fill_skeletons),
    Migration(3, "rate_buckets: the API's rate limits shared by its replicas", _rate_buckets),
    Migration(4, "collections; the people so far in 'default'; names unique per collection", _collections),
    Migration(5, "face_chips, reembed_vectors: embedding the faces again under another model", _face_chips),
    Migration(6, "events: the access log of recognition decisions", _events),
    Migration(7, "visitors: unknown faces grouped by likeness, for review", _visitors),
    Migration(
        8,
        "users.name_skeleton again: NFKC and whitespace folded first (full-width and doubled spaces)",
        _drop_collection_skeletons,
        _refill_skeletons,
    ),
)


def migrate(conn: psycopg.Connection, model: str, dim: int, *, check_model: bool = True) -> list[int]:
    """Bring the schema up to date and check the recorded model; return the versions applied now.

    Raises ModelMismatchError when the gallery was created for another model or dimension, unless
    `check_model` is False (`facegate reembed`, which moves the gallery to the configured model).
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                version integer PRIMARY KEY,
                description text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )"""
        )
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        pending = [m for m in MIGRATIONS if m.version not in done]
        for migration in pending:
            logger.info("applying schema migration %d: %s", migration.version, migration.description)
            for statement in migration.statements(dim):
                conn.execute(statement)
            if migration.then is not None:
                migration.then(conn)
            conn.execute(
                "INSERT INTO schema_migrations (version, description) VALUES (%s, %s)",
                (migration.version, migration.description),
            )
        _check_model(conn, model, dim, refuse_other=check_model)
    return [m.version for m in pending]


def _check_model(conn: psycopg.Connection, model: str, dim: int, *, refuse_other: bool) -> None:
    """Record the model of a new gallery; refuse another model on an existing one if `refuse_other`."""
    row = conn.execute("SELECT model, dim FROM gallery_meta").fetchone()
    if row is None:
        conn.execute("INSERT INTO gallery_meta (model, dim) VALUES (%s, %s)", (model, dim))
        return
    stored_model, stored_dim = row
    if refuse_other and (stored_model, stored_dim) != (model, dim):
        raise ModelMismatchError(stored_model, stored_dim, model, dim)
