"""Moving a gallery to another embedding model: every stored face embedded again from its chip.

The new vectors are computed in batches, each committed on its own, into `reembed_vectors`, beside
the faces' own vectors, which stay in use: an interrupted run (a crash, Ctrl-C, an unreadable chip)
leaves the gallery as it was, on its old model. The last step swaps the new vectors in, in one
transaction: the HNSW index and the old column dropped, the new one renamed in its place, the index
built again, the gallery's model recorded. Running it again resumes: faces already embedded for the
same model are kept, those of another model's run are dropped.

The gallery must not be in use meanwhile (the API and other `facegate` commands stopped): after the
swap, a process still on the old model would compare its vectors with the new model's. Both the
start and the swap refuse while another FaceGate process is connected.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql

from facegate.chips import FaceChip
from facegate.embedding import Embedder
from facegate.gallery.errors import GalleryError, MissingChipsError, PersonRef, ReembedError
from facegate.gallery.schema import HNSW_INDEX, hnsw_index, migrate
from facegate.gallery.store import chip_from_row

logger = logging.getLogger(__name__)

# Each face is one embedder call on its 256 × 256 chip: a batch holds at most this many decoded
# chips (~200 KB each) and is one transaction.
DEFAULT_BATCH_SIZE = 64
APPLICATION_NAME = "facegate-reembed"
# Gallery.open's connections; the health probe's ("facegate-health") come and go in milliseconds.
_SERVICE_APPLICATION = "facegate"

_NEXT_BATCH = """
    SELECT f.id, f.user_id, c.jpeg, c.box, c.keypoints, c.score
    FROM faces f JOIN face_chips c ON c.face_id = f.id
    WHERE f.id > %s AND NOT EXISTS (SELECT 1 FROM reembed_vectors r WHERE r.face_id = f.id)
    ORDER BY f.id
    LIMIT %s"""

_PENDING = (
    "SELECT count(*) FROM faces f WHERE NOT EXISTS (SELECT 1 FROM reembed_vectors r WHERE r.face_id = f.id)"
)

_WITHOUT_CHIPS = """
    SELECT DISTINCT c.name, u.id, u.name
    FROM faces f JOIN users u ON u.id = f.user_id JOIN collections c ON c.id = u.collection_id
    WHERE NOT EXISTS (SELECT 1 FROM face_chips ch WHERE ch.face_id = f.id)
    ORDER BY c.name, u.id"""


@dataclass(frozen=True, slots=True)
class ReembedSummary:
    previous_model: str
    previous_dim: int
    model: str
    dim: int
    faces: int  # faces now under `model`
    resumed: int  # of them, embedded by an earlier, interrupted run

    @property
    def changed(self) -> bool:
        return (self.previous_model, self.previous_dim) != (self.model, self.dim)


class Reembedding:
    """One run of `facegate reembed` on an open connection: `pending` faces to embed, `batches()`
    to embed them, `switch()` to swap the new vectors in. Use `Reembedding.open`."""

    def __init__(self, conn: psycopg.Connection, embedder: Embedder, batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self._conn = conn
        self._embedder = embedder
        self._batch_size = batch_size
        row = conn.execute("SELECT model, dim FROM gallery_meta").fetchone()
        assert row is not None  # migrate records a model
        self.previous_model, self.previous_dim = str(row[0]), int(row[1])
        self.needed = (self.previous_model, self.previous_dim) != (embedder.name, embedder.dim)
        self.resumed = 0
        self.pending = 0
        if self.needed:
            self._prepare()
        elif conn.execute("DELETE FROM reembed_vectors").rowcount:
            logger.info("dropped the vectors of an earlier, unfinished run for another model")

    @classmethod
    @contextmanager
    def open(
        cls, dsn: str, embedder: Embedder, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> Iterator[Reembedding]:
        """Connect, bring the schema up to date (without the model check `Gallery.open` makes) and
        check that the gallery can move: MissingChipsError, naming the people whose faces have no
        chip, and GalleryError while another FaceGate process uses it, both before any write."""
        with psycopg.connect(dsn, autocommit=True, application_name=APPLICATION_NAME) as conn:
            migrate(conn, embedder.name, embedder.dim, check_model=False)
            register_vector(conn)
            yield cls(conn, embedder, batch_size)

    def _prepare(self) -> None:
        _refuse_while_in_use(self._conn)
        _refuse_without_chips(self._conn)
        model = self._embedder.name
        with self._conn.transaction():
            stale = self._conn.execute(
                "DELETE FROM reembed_vectors WHERE model <> %s OR vector_dims(embedding) <> %s",
                (model, self._embedder.dim),
            ).rowcount
            if stale:
                logger.info("dropped %d vectors of an earlier run for another model", stale)
            self.resumed = _count(self._conn, "SELECT count(*) FROM reembed_vectors")
            self.pending = _count(self._conn, _PENDING)
        if self.resumed:
            logger.info("resuming: %d faces were embedded by an earlier run", self.resumed)

    def batches(self) -> Iterator[int]:
        """Embed the pending faces, one committed batch at a time; yield each batch's size.

        ReembedError for a chip that cannot be read: the batches done so far stay for the next run.
        """
        after = 0
        while self.needed:
            with self._conn.transaction():
                done, after = self._embed_batch(after)
            if not done:
                return
            yield done

    def _embed_batch(self, after: int) -> tuple[int, int]:
        """Embed the next batch of faces after id `after`; return how many, and the last id."""
        rows = self._conn.execute(_NEXT_BATCH, (after, self._batch_size)).fetchall()
        staged = [
            (face_id, self._embedder.name, self._embed(face_id, user_id, chip_from_row(*columns)))
            for face_id, user_id, *columns in rows
        ]
        if staged:
            with self._conn.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO reembed_vectors (face_id, model, embedding) VALUES (%s, %s, %s)", staged
                )
        return len(staged), (rows[-1][0] if rows else after)

    def _embed(self, face_id: int, user_id: int, chip: FaceChip | None) -> np.ndarray:
        assert chip is not None  # the batch query joins face_chips
        try:
            pixels = chip.pixels()
        except (OSError, ValueError) as exc:  # Pillow: not a JPEG, truncated
            raise ReembedError(
                f"the chip of face {face_id} (user {user_id}) cannot be read ({exc}); the gallery is "
                "unchanged. Delete that face (or enrol the person again) and rerun `facegate reembed`"
            ) from exc
        return self._embedder.embed(pixels, [chip.face])[0]

    def switch(self) -> ReembedSummary:
        """Swap the new vectors in, in one transaction, embedding first any face added since the
        batches ran. A failure rolls everything back: the gallery stays on its old model."""
        model, dim = self._embedder.name, self._embedder.dim
        conn = self._conn
        if self.needed:
            with conn.transaction():
                # Writers wait from here on (searches go on until the ALTER TABLE below).
                conn.execute("LOCK TABLE faces IN EXCLUSIVE MODE")
                _refuse_while_in_use(conn)
                _refuse_without_chips(conn)
                after = 0
                while (late := self._embed_batch(after))[0]:
                    after = late[1]
                for statement in _swap_statements(model, dim):
                    conn.execute(statement)
            logger.info(
                "gallery moved from %s (%d-D) to %s (%d-D)",
                self.previous_model,
                self.previous_dim,
                model,
                dim,
            )
            # The rows rewritten by the swap leave their old versions behind: make the room reusable.
            conn.execute("VACUUM (ANALYZE) faces")
        faces = _count(conn, "SELECT count(*) FROM faces")
        return ReembedSummary(self.previous_model, self.previous_dim, model, dim, faces, self.resumed)


def _swap_statements(model: str, dim: int) -> list[sql.Composed | sql.SQL]:
    return [
        sql.SQL("DROP INDEX {}").format(sql.Identifier(HNSW_INDEX)),
        sql.SQL("ALTER TABLE faces ADD COLUMN embedding_next vector({})").format(sql.Literal(dim)),
        sql.SQL(
            "UPDATE faces f SET embedding_next = r.embedding, model = {} "
            "FROM reembed_vectors r WHERE r.face_id = f.id"
        ).format(sql.Literal(model)),
        # NOT NULL fails the swap (and rolls it back) if any face was left without a new vector.
        sql.SQL("ALTER TABLE faces DROP COLUMN embedding"),
        sql.SQL("ALTER TABLE faces RENAME COLUMN embedding_next TO embedding"),
        sql.SQL("ALTER TABLE faces ALTER COLUMN embedding SET NOT NULL"),
        hnsw_index(),
        sql.SQL("UPDATE gallery_meta SET model = {}, dim = {}").format(sql.Literal(model), sql.Literal(dim)),
        sql.SQL("DELETE FROM reembed_vectors"),
        # Unknown visitors (facegate.visitors) are grouped by the old model's vectors: the review
        # queue starts again under the new one; the access log's events stay.
        sql.SQL("DELETE FROM visitors"),
        sql.SQL("ALTER TABLE visitor_faces ALTER COLUMN embedding TYPE vector({})").format(sql.Literal(dim)),
    ]


def _refuse_without_chips(conn: psycopg.Connection) -> None:
    people = [
        PersonRef(collection, user_id, name) for collection, user_id, name in conn.execute(_WITHOUT_CHIPS)
    ]
    if people:
        raise MissingChipsError(people)


def _refuse_while_in_use(conn: psycopg.Connection) -> None:
    others = _count(
        conn,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s",
        (_SERVICE_APPLICATION,),
    )
    if others:
        raise GalleryError(
            f"the gallery is in use ({others} connections of FaceGate processes): stop the API, the UI's "
            "API and any other `facegate` command first, then rerun `facegate reembed`"
        )


def _count(conn: psycopg.Connection, query: str, params: tuple[object, ...] = ()) -> int:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])
