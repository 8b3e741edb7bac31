"""The access log: every recognition decision, written to PostgreSQL beside the gallery.

What a decision leaves is set by EVENTS: `off` (nothing), `decisions` (time, collection, source, key,
status, person, distance, similarity, threshold, quality reason, box) or `faces` (also the face's
aligned chip, facegate.chips: a small JPEG, never the photo). Events older than
EVENT_RETENTION_DAYS are purged by the writer itself, in bounded batches.

Under EVENTS=faces, each `no_match` face also counts as a visit of an unknown visitor
(facegate.visitors), in the same transaction as its event.

Writing never slows or fails the answer it records: `record` only puts the decisions on a bounded
queue, and one background thread makes the chips and writes them in batches. When the queue is full
(the database is slower than the traffic) or the database refuses the write, the events are dropped,
counted and logged; the answer has long gone.
"""

from __future__ import annotations

import csv
import io
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import astuple, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Literal

import numpy as np
import psycopg
from psycopg.rows import class_row

from facegate.chips import make_chip
from facegate.gallery import Gallery
from facegate.gallery.errors import GalleryError
from facegate.recognition import Identified, Recognition
from facegate.visitors import Visitors

logger = logging.getLogger(__name__)

EventMode = Literal["off", "decisions", "faces"]
EventStatus = Literal["match", "no_match", "low_quality"]
Source = Literal["recognize", "stream", "liveness"]

# Decisions waiting to be written; beyond this, new ones are dropped (counted) rather than held.
QUEUE_SIZE = 10_000
# The writer takes at most this many requests' decisions per transaction.
_BATCH = 200
# Expired events go this many rows per transaction, so that a purge never holds long locks.
PURGE_BATCH = 5_000
# How often the writer purges (by the log's clock), and how long it sleeps when there is nothing to do.
PURGE_EVERY = timedelta(hours=1)
_IDLE_S = 30.0
# The most events one read returns (a CSV export included).
MAX_PAGE = 500
MAX_EXPORT = 100_000


@dataclass(frozen=True, slots=True)
class Sighting:
    """Where a decision was made: which endpoint, which key, which collection."""

    collection: str
    source: Source
    key_name: str | None


@dataclass(slots=True)
class _Pending:
    """One request's decisions on their way to the database."""

    sighting: Sighting
    at: datetime
    faces: list[Identified]
    threshold: float
    threshold_source: str
    image: np.ndarray | None  # kept only under EVENTS=faces, to make the chips off the request path


@dataclass(frozen=True, slots=True)
class EventRecord:
    id: int
    at: datetime
    collection: str
    source: str
    key_name: str | None
    status: str
    user_id: int | None
    user_name: str | None
    distance: float | None
    similarity: float | None
    threshold: float
    threshold_source: str
    quality: str | None
    box: list[float]
    has_face: bool
    visitor_id: int | None


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events to read; None = any. `collections`: those the reader may see (None: all)."""

    collections: frozenset[str] | None = None
    since: datetime | None = None
    until: datetime | None = None
    status: EventStatus | None = None
    user_id: int | None = None
    source: Source | None = None

    def where(self) -> tuple[str, list[object]]:
        clauses, values = ["TRUE"], list[object]()
        if self.collections is not None:
            clauses.append("c.name = ANY(%s)")
            values.append(sorted(self.collections))
        for column, value in (
            ("e.at >= %s", self.since),
            ("e.at < %s", self.until),
            ("e.status = %s", self.status),
            ("e.user_id = %s", self.user_id),
            ("e.source = %s", self.source),
        ):
            if value is not None:
                clauses.append(column)
                values.append(value)
        return " AND ".join(clauses), values


CSV_COLUMNS = tuple(column.name for column in fields(EventRecord))

_SELECT = """
    SELECT e.id, e.at, c.name AS collection, e.source, e.key_name, e.status, e.user_id, e.user_name,
           e.distance, e.similarity, e.threshold, e.threshold_source, e.quality, e.box,
           e.chip IS NOT NULL AS has_face, e.visitor_id
    FROM events e JOIN collections c ON c.id = e.collection_id"""

_INSERT = """
    INSERT INTO events (at, collection_id, source, key_name, status, user_id, user_name, distance,
                        similarity, threshold, threshold_source, quality, box, chip, visitor_id)
    SELECT %s, c.id, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s
    FROM collections c WHERE c.name = %s"""


def status_of(identified: Identified) -> EventStatus:
    """The status /recognize answers for the face (facegate.api.answers says it the same way)."""
    if identified.face.problem is not None:
        return "low_quality"
    return "match" if identified.person is not None else "no_match"


@dataclass
class StreamDedup:
    """One stream's memory of what it logged: a person (or, for faces no one matched, "someone
    unknown") is logged once per `window_s`, not once per frame."""

    window_s: float
    clock: Callable[[], float] = time.monotonic
    _last: dict[tuple[str, int | None], float] = field(default_factory=dict)

    def fresh(self, identified: Identified) -> bool:
        person = identified.person
        key = (status_of(identified), None if person is None else person.user_id)
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.window_s:
            return False
        self._last[key] = now
        return True


class EventLog:
    """Records decisions off the request path and reads them back; thread-safe."""

    def __init__(
        self,
        gallery: Gallery,
        mode: EventMode,
        retention_days: int,
        visitors: Visitors | None = None,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self.gallery = gallery
        self.mode = mode
        # Unknown faces are grouped only where their chips are kept (an operator enrols from them).
        self.visitors = visitors if mode == "faces" else None
        self.retention = timedelta(days=retention_days)
        # The log's time: each event's `at`, and when purging is due; a test moves it.
        self.clock = clock
        self.dropped = 0  # events lost to a full queue or a refused write, since start
        self._queue: queue.Queue[_Pending | None] = queue.Queue(queue_size)
        self._last_purge: datetime | None = None
        self._writer: threading.Thread | None = None
        if mode != "off":
            self._writer = threading.Thread(target=self._write_forever, name="facegate-events", daemon=True)
            self._writer.start()

    # --- recording -------------------------------------------------------------------------------

    def record(
        self,
        recognition: Recognition,
        image: np.ndarray,
        sighting: Sighting,
        dedup: StreamDedup | None = None,
    ) -> None:
        """Queue the decisions of one request (or stream frame); returns at once, never raises."""
        if self.mode == "off":
            return
        faces = [face for face in recognition.faces if dedup is None or dedup.fresh(face)]
        if not faces:
            return
        pending = _Pending(
            sighting,
            self.clock(),
            faces,
            recognition.threshold.distance,
            recognition.threshold.source,
            image if self.mode == "faces" else None,
        )
        try:
            self._queue.put_nowait(pending)
        except queue.Full:
            self._drop(len(faces), "the queue is full (the database is slower than the traffic)")

    def flush(self) -> None:
        """Wait until everything recorded so far is written (or dropped)."""
        if self._writer is not None:
            self._queue.join()

    def close(self) -> None:
        """Write what is queued, then stop the writer."""
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join()
            self._writer = None

    def _write_forever(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=_IDLE_S)
            except queue.Empty:
                self._purge_if_due()
                continue
            batch = [first]
            while len(batch) < _BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            stop = None in batch
            try:
                self._write([p for p in batch if p is not None])
                if not stop:
                    self._purge_if_due()
            except Exception:  # a bug here must not stop the log, nor ever reach an answer
                logger.exception("the access-log writer failed on a batch; its events are lost")
            finally:
                for _ in batch:
                    self._queue.task_done()
            if stop:
                return

    def _write(self, batch: Sequence[_Pending]) -> None:
        count = sum(len(pending.faces) for pending in batch)
        if not count:
            return
        try:
            with self.gallery.transaction() as conn:
                for pending in batch:
                    for identified in pending.faces:
                        conn.execute(_INSERT, self._row(conn, pending, identified))
        except (GalleryError, psycopg.Error) as exc:
            self._drop(count, f"the database refused them ({exc})")

    def _row(self, conn: psycopg.Connection, pending: _Pending, identified: Identified) -> tuple[object, ...]:
        sighting, person = pending.sighting, identified.person
        chip = None if pending.image is None else make_chip(pending.image, identified.face.face)
        visitor_id = None
        if self.visitors is not None and chip is not None and status_of(identified) == "no_match":
            embedding = identified.face.embedding
            visitor_id = self.visitors.sight(conn, sighting.collection, embedding, chip, pending.at)
        return (
            pending.at,
            sighting.source,
            sighting.key_name,
            status_of(identified),
            None if person is None else person.user_id,
            None if person is None else person.name,
            identified.distance,
            identified.similarity,
            pending.threshold,
            pending.threshold_source,
            identified.face.problem,
            [float(v) for v in identified.face.face.box],
            None if chip is None else chip.jpeg,
            visitor_id,
            sighting.collection,
        )

    def _drop(self, count: int, why: str) -> None:
        self.dropped += count
        logger.warning("%d access-log events dropped: %s; %d since start", count, why, self.dropped)

    # --- retention -------------------------------------------------------------------------------

    def _purge_if_due(self) -> None:
        now = self.clock()
        if self._last_purge is not None and now - self._last_purge < PURGE_EVERY:
            return
        self._last_purge = now
        try:
            self.purge()
        except (GalleryError, psycopg.Error) as exc:
            logger.warning("purging expired access-log events failed: %s", exc)

    def purge(self, batch: int = PURGE_BATCH) -> int:
        """Delete the events older than the retention, `batch` rows per transaction; return how many."""
        cutoff = self.clock() - self.retention
        total = 0
        while True:
            with self.gallery.transaction() as conn:
                deleted = conn.execute(
                    "DELETE FROM events WHERE id IN "
                    "(SELECT id FROM events WHERE at < %s ORDER BY at LIMIT %s)",
                    (cutoff, batch),
                ).rowcount
            total += deleted
            if deleted < batch:
                break
        if total:
            logger.info("purged %d access-log events older than %s", total, cutoff.isoformat())
        return total

    # --- reading ---------------------------------------------------------------------------------

    def page(self, which: EventFilter, before: int | None = None, limit: int = 50) -> list[EventRecord]:
        """Events newest first, those with an id below `before` (the previous page's last)."""
        where, values = which.where()
        if before is not None:
            where += " AND e.id < %s"
            values.append(before)
        with self.gallery.transaction() as conn:
            cursor = conn.cursor(row_factory=class_row(EventRecord))
            return cursor.execute(
                _SELECT + " WHERE " + where + " ORDER BY e.id DESC LIMIT %s",
                [*values, min(limit, MAX_EXPORT)],
            ).fetchall()

    def all(self, which: EventFilter) -> Iterator[EventRecord]:
        """Every event `which` selects (at most MAX_EXPORT), newest first, a page at a time."""
        before, sent = None, 0
        while sent < MAX_EXPORT:
            page = self.page(which, before, min(MAX_PAGE * 10, MAX_EXPORT - sent))
            yield from page
            sent += len(page)
            if len(page) < MAX_PAGE * 10:
                return
            before = page[-1].id

    def face(self, event_id: int, collections: frozenset[str] | None) -> bytes | None:
        """The event's chip (JPEG); None when there is no such event the reader may see, or no chip."""
        with self.gallery.transaction() as conn:
            row = conn.execute(
                "SELECT e.chip FROM events e JOIN collections c ON c.id = e.collection_id "
                "WHERE e.id = %s AND (%s::text[] IS NULL OR c.name = ANY(%s::text[]))",
                (event_id, _names(collections), _names(collections)),
            ).fetchone()
        return None if row is None else row[0]

    def reassign(self, source_user: int, target_user: int) -> None:
        """A merge's share of the log: the events of `source_user` become `target_user`'s. Run inside
        the merge's transaction (Gallery.identity_lock), so that both happen or neither."""
        with self.gallery.transaction() as conn:
            conn.execute(
                "UPDATE events SET user_id = %s, user_name = (SELECT name FROM users WHERE id = %s) "
                "WHERE user_id = %s",
                (target_user, target_user, source_user),
            )


def csv_lines(records: Iterable[EventRecord]) -> Iterator[str]:
    """The events as CSV (a header, then one line each; the box as four numbers with spaces), for
    GET /events.csv and `facegate events --csv` alike."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for record in records:
        writer.writerow(
            " ".join(f"{v:.1f}" for v in value)
            if isinstance(value, list)
            else value.isoformat()
            if isinstance(value, datetime)
            else value
            for value in astuple(record)
        )
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


def _names(collections: frozenset[str] | None) -> list[str] | None:
    return None if collections is None else sorted(collections)
