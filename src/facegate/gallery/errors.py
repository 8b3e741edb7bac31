"""The gallery's exceptions; the API maps each to one HTTP status."""

from __future__ import annotations

from dataclasses import dataclass


class GalleryError(Exception):
    """Base class of every error the gallery raises on purpose."""


class DuplicateNameError(GalleryError):
    """A person with this name is already registered in the collection (the unique constraint decided)."""

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


class UnknownCollectionError(GalleryError):
    """No collection with this name (HTTP 404)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no collection named {name!r}")
        self.name = name


class DuplicateCollectionError(GalleryError):
    """A collection with this name exists already (HTTP 409)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"a collection named {name!r} exists already")
        self.name = name


class InvalidCollectionNameError(GalleryError, ValueError):
    """The collection name breaks the naming rule (HTTP 422); the message says the rule."""


class ProtectedCollectionError(GalleryError):
    """The default collection cannot be deleted: clients that name no collection use it (HTTP 409)."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"the collection {name!r} is the default one and cannot be deleted; delete its people instead"
        )
        self.name = name


class UnknownFaceError(GalleryError):
    """The person has no face with this id (HTTP 404)."""

    def __init__(self, user_id: int, face_id: int) -> None:
        super().__init__(f"user {user_id} has no face with id {face_id}")
        self.user_id = user_id
        self.face_id = face_id


class LastFaceError(GalleryError):
    """Deleting a person's only face would leave them unrecognisable (HTTP 409)."""

    def __init__(self, user_id: int, face_id: int) -> None:
        super().__init__(
            f"face {face_id} is the last face of user {user_id}; "
            "delete the user instead, or add another face first"
        )
        self.user_id = user_id
        self.face_id = face_id


class TransferFileError(GalleryError, ValueError):
    """An export file that cannot be imported: not one, another format version, damaged or edited
    since export (checksum), or invalid content (HTTP 422); the message says which."""


class TransferModelError(TransferFileError):
    """The export file holds another model's embeddings than this gallery (HTTP 422)."""

    def __init__(self, file_model: str, file_dim: int, model: str, dim: int) -> None:
        super().__init__(
            f"the file holds embeddings of model {file_model!r} ({file_dim}-D) and this gallery those of "
            f"{model!r} ({dim}-D): they cannot be compared; import it into a FaceGate configured with "
            f"{file_model!r}, or enrol the people again from their photos"
        )
        self.file_model = file_model
        self.file_dim = file_dim


class ModelMismatchError(GalleryError):
    """The gallery holds another model's embeddings than the configured one; comparing them is meaningless."""

    def __init__(self, stored_model: str, stored_dim: int, model: str, dim: int) -> None:
        super().__init__(
            f"this gallery holds embeddings of model {stored_model!r} ({stored_dim}-D); the configured model "
            f"is {model!r} ({dim}-D): run `facegate reembed` to move the gallery to {model!r} (it embeds "
            f"every stored face chip again), or set FACE_EMBEDDER back to the value that gives "
            f"{stored_model!r}; a gallery without face chips has to be enrolled again, into a new one "
            "(FACEGATE_DATA_DIR or DATABASE_URL pointed elsewhere)"
        )
        self.stored_model = stored_model
        self.stored_dim = stored_dim
        self.model = model
        self.dim = dim


@dataclass(frozen=True, slots=True)
class PersonRef:
    """A person named in a message: where, which id, which name."""

    collection: str
    user_id: int
    name: str

    def __str__(self) -> str:
        return f"{self.collection}: {self.user_id} {self.name}"


class MissingChipsError(GalleryError):
    """`facegate reembed` cannot move these people: some of their faces have no stored chip (stored
    before chips were kept, or with FACEGATE_KEEP_FACES=false). Nothing was written."""

    def __init__(self, people: list[PersonRef]) -> None:
        listed = "\n".join(f"  {person}" for person in people)
        super().__init__(
            f"{len(people)} people have faces without a stored chip, so they cannot be embedded again; "
            "nothing was changed. Enrol them again (or delete those faces) and rerun. Collection: id name\n"
            + listed
        )
        self.people = people


class ReembedError(GalleryError):
    """A face could not be embedded again (an unreadable chip); the gallery was left as it was."""


class GalleryUnavailable(GalleryError):
    """The database cannot be reached (down, refusing connections, pool exhausted past the timeout)."""


class EmbeddedServerError(GalleryUnavailable):
    """The embedded PostgreSQL server could not be started."""
