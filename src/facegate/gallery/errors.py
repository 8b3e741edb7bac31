"""The gallery's exceptions; the API maps each to one HTTP status."""

from __future__ import annotations


class GalleryError(Exception):
    """Base class of every error the gallery raises on purpose."""


class DuplicateNameError(GalleryError):
    """A person with this name is already registered (the unique constraint decided)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"a person named {name!r} is already registered")
        self.name = name


class ConfusableNameError(GalleryError):
    """The name looks like one already registered (the same Unicode confusable skeleton)."""

    def __init__(self, name: str, existing_name: str, existing_id: int) -> None:
        super().__init__(
            f"the name {name!r} looks like {existing_name!r}, already registered as user {existing_id}; "
            "choose a name that can be told apart"
        )
        self.name = name
        self.existing_name = existing_name
        self.existing_id = existing_id


class UnknownUserError(GalleryError):
    """No person with this id."""

    def __init__(self, user_id: int) -> None:
        super().__init__(f"no user with id {user_id}")
        self.user_id = user_id


class ModelMismatchError(GalleryError):
    """The gallery holds another model's embeddings than the configured one; comparing them is meaningless."""

    def __init__(self, stored_model: str, stored_dim: int, model: str, dim: int) -> None:
        super().__init__(
            f"this gallery holds embeddings of model {stored_model!r} ({stored_dim}-D); the configured model "
            f"is {model!r} ({dim}-D); configure {stored_model!r} again (FACE_EMBEDDER), or re-embed: enrol "
            f"the people again with {model!r} into a new gallery by pointing FACEGATE_DATA_DIR or "
            "DATABASE_URL elsewhere"
        )
        self.stored_model = stored_model
        self.stored_dim = stored_dim
        self.model = model
        self.dim = dim


class GalleryUnavailable(GalleryError):
    """The database cannot be reached (down, refusing connections, pool exhausted past the timeout)."""


class EmbeddedServerError(GalleryUnavailable):
    """The embedded PostgreSQL server could not be started."""
