"""Unknown visitors: the faces no one in a collection matched, grouped by likeness for review.

Each `no_match` face the access log writes (under EVENTS=faces: grouping needs the face's vector and
chip) joins the nearest visitor of its collection whose stored faces it is within the one-to-one
verification threshold of (FACE_VERIFY_THRESHOLD: "the same person", as for a photo added to
someone), or starts a new visitor. A visitor keeps its `MAX_FACES` most detailed faces (the widest:
the most pixels the embedding came from), so that a face seen daily costs a few rows, not one per
visit. An operator then enrols the visitor as a new person, adds them to someone, or forgets them
(facegate.api.routes.visitors), through the gallery's own guards (facegate.enrolment).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import psycopg
from psycopg.rows import class_row

from facegate.chips import FaceChip
from facegate.faces import Face
from facegate.gallery import Gallery
from facegate.gallery.errors import GalleryError
from facegate.recognition import MatchPolicy

MAX_FACES = 5


class UnknownVisitorError(GalleryError):
    """No visitor with this id in the collection (HTTP 404)."""

    def __init__(self, visitor_id: int) -> None:
        super().__init__(f"no unknown visitor with id {visitor_id}")


@dataclass(frozen=True, slots=True)
class VisitorRecord:
    id: int
    first_seen: datetime
    last_seen: datetime
    visits: int
    faces: int


class Visitors:
    """The unknown visitors of every collection; thread-safe."""

    def __init__(self, gallery: Gallery, policy: MatchPolicy) -> None:
        self.gallery = gallery
        self.policy = policy

    def sight(
        self, conn: psycopg.Connection, collection: str, embedding: np.ndarray, chip: FaceChip, at: datetime
    ) -> int | None:
        """Count a face no one matched as a visit of the visitor it looks like, or of a new one;
        return the visitor's id (None when the collection is gone). Runs in the access log's
        transaction (facegate.events), so that the event and the visit are written together."""
        row = conn.execute("SELECT id FROM collections WHERE name = %s", (collection,)).fetchone()
        if row is None:
            return None
        collection_id = row[0]
        nearest = conn.execute(
            "SELECT visitor_id, embedding <=> %s FROM visitor_faces WHERE collection_id = %s "
            "ORDER BY embedding <=> %s LIMIT 1",
            (embedding, collection_id, embedding),
        ).fetchone()
        if nearest is not None and self.policy.verifies(float(nearest[1])).verified:
            visitor_id = int(nearest[0])
            conn.execute(
                "UPDATE visitors SET visits = visits + 1, last_seen = greatest(last_seen, %s) WHERE id = %s",
                (at, visitor_id),
            )
        else:
            created = conn.execute(
                "INSERT INTO visitors (collection_id, first_seen, last_seen, visits) "
                "VALUES (%s, %s, %s, 1) RETURNING id",
                (collection_id, at, at),
            ).fetchone()
            assert created is not None
            visitor_id = int(created[0])
        face = chip.face
        conn.execute(
            "INSERT INTO visitor_faces (visitor_id, collection_id, embedding, detail, chip, chip_box, "
            "chip_keypoints, score, seen_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                visitor_id,
                collection_id,
                embedding,
                face.width,
                chip.jpeg,
                list(face.box),
                face.keypoints.ravel().tolist(),
                face.score,
                at,
            ),
        )
        # Only the most detailed faces stay.
        conn.execute(
            "DELETE FROM visitor_faces WHERE visitor_id = %s AND id NOT IN "
            "(SELECT id FROM visitor_faces WHERE visitor_id = %s ORDER BY detail DESC, id LIMIT %s)",
            (visitor_id, visitor_id, MAX_FACES),
        )
        return visitor_id

    def page(self, collection: str, offset: int = 0, limit: int = 50) -> tuple[list[VisitorRecord], int]:
        """The collection's visitors, most recently seen first, and how many there are."""
        with self.gallery.transaction() as conn:
            where = "v.collection_id = (SELECT id FROM collections WHERE name = %s)"
            total = conn.execute("SELECT count(*) FROM visitors v WHERE " + where, (collection,)).fetchone()
            records = (
                conn.cursor(row_factory=class_row(VisitorRecord))
                .execute(
                    "SELECT v.id, v.first_seen, v.last_seen, v.visits, "
                    "(SELECT count(*) FROM visitor_faces f WHERE f.visitor_id = v.id) AS faces "
                    "FROM visitors v WHERE "
                    + where
                    + " ORDER BY v.last_seen DESC, v.id DESC OFFSET %s LIMIT %s",
                    (collection, offset, limit),
                )
                .fetchall()
            )
        assert total is not None
        return records, int(total[0])

    def faces(self, visitor_id: int, collection: str) -> list[FaceChip]:
        """The visitor's stored faces, most detailed first. UnknownVisitorError."""
        with self.gallery.transaction() as conn:
            rows = conn.execute(
                "SELECT f.chip, f.chip_box, f.chip_keypoints, f.score FROM visitor_faces f "
                "JOIN visitors v ON v.id = f.visitor_id JOIN collections c ON c.id = v.collection_id "
                "WHERE v.id = %s AND c.name = %s ORDER BY f.detail DESC, f.id",
                (visitor_id, collection),
            ).fetchall()
        if not rows:
            raise UnknownVisitorError(visitor_id)
        return [
            FaceChip(bytes(jpeg), Face((box[0], box[1], box[2], box[3]), score, _keypoints(points)))
            for jpeg, box, points, score in rows
        ]

    def forget(self, visitor_id: int, collection: str) -> None:
        """Delete the visitor and their faces; their events stay, naming no visitor. UnknownVisitorError."""
        with self.gallery.transaction() as conn:
            deleted = conn.execute(
                "DELETE FROM visitors WHERE id = %s "
                "AND collection_id = (SELECT id FROM collections WHERE name = %s)",
                (visitor_id, collection),
            ).rowcount
            if deleted == 0:
                raise UnknownVisitorError(visitor_id)
            conn.execute("UPDATE events SET visitor_id = NULL WHERE visitor_id = %s", (visitor_id,))


def _keypoints(flat: list[float]) -> np.ndarray:
    return np.asarray(flat, dtype=np.float32).reshape(5, 2)
