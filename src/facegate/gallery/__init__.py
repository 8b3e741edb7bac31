"""The PostgreSQL + pgvector gallery: people, their face embeddings and nearest-person search."""

from facegate.gallery.embedded import EmbeddedServer, database_dsn
from facegate.gallery.errors import (
    ConfusableNameError,
    DuplicateNameError,
    EmbeddedServerError,
    GalleryError,
    GalleryUnavailable,
    ModelMismatchError,
    UnknownUserError,
)
from facegate.gallery.store import FaceRecord, Gallery, GalleryStats, Match, UserRecord

__all__ = [
    "ConfusableNameError",
    "DuplicateNameError",
    "EmbeddedServer",
    "EmbeddedServerError",
    "FaceRecord",
    "Gallery",
    "GalleryError",
    "GalleryStats",
    "GalleryUnavailable",
    "Match",
    "ModelMismatchError",
    "UnknownUserError",
    "UserRecord",
    "database_dsn",
]
