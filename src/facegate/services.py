"""The composition root: the models, the gallery and the recognition rules of one process, built
from the settings in one place for the API's lifespan and for the CLI."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from facegate.config import Settings
from facegate.enrolment import Enrolment
from facegate.events import EventLog
from facegate.gallery import Gallery, database_dsn
from facegate.pipeline import Pipeline
from facegate.recognition import MatchPolicy, Recognizer
from facegate.visitors import Visitors


@dataclass(frozen=True, slots=True)
class Core:
    settings: Settings
    pipeline: Pipeline
    gallery: Gallery
    policy: MatchPolicy
    recognizer: Recognizer
    enrolment: Enrolment
    events: EventLog
    visitors: Visitors

    def close(self) -> None:
        self.events.close()  # writes what is queued while the gallery's pool is still open
        self.gallery.close()
        self.pipeline.close()


def build_core(settings: Settings, dsn: str, wrap: Callable[[Pipeline], Pipeline] | None = None) -> Core:
    """Everything on the database at `dsn`; `wrap` instruments the pipeline (the API's metrics)."""
    pipeline = Pipeline.from_settings(settings)
    if wrap is not None:
        pipeline = wrap(pipeline)
    embedder = pipeline.embedder
    gallery = Gallery.from_settings(dsn, embedder.name, embedder.dim, settings)
    policy = MatchPolicy.from_settings(settings, embedder.name)
    recognizer = Recognizer(gallery, policy)
    visitors = Visitors(gallery, policy)
    events = EventLog(gallery, settings.events, settings.event_retention_days, visitors)
    enrolment = Enrolment(gallery, recognizer, events)
    return Core(settings, pipeline, gallery, policy, recognizer, enrolment, events, visitors)


@contextmanager
def open_core(settings: Settings) -> Iterator[Core]:
    """The core on the configured database (the embedded server started and stopped around it)."""
    with database_dsn(settings) as dsn:
        core = build_core(settings, dsn)
        try:
            yield core
        finally:
            core.close()
