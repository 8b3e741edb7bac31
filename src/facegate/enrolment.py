"""Who may be stored under which name: registering people and adding their photos, with the rules
that keep the gallery clean, for the API and the CLI alike.

- A name is cleaned once (`facegate.names.clean_name`) before anything is stored.
- A photo added to a person must be that person: within the one-to-one verification threshold
  (FACE_VERIFY_THRESHOLD) of their nearest stored face. A much older photo may legitimately fail;
  `force` stores it anyway, and the override is logged.
- A new registration must not be someone already in the collection: refused when `/recognize`
  would name a person for the face. That is the 1:N decision (the FPIR policy at the collection's
  size, with the margin), not the one-to-one threshold: at it, 0.4-0.7% of pairs of different
  people match (the default model at 0.717, dlib at 0.086; LFW), so in a collection of 10,000 nearly
  every newcomer would resemble someone, while the policy refuses about FACE_MATCH_FPIR of them.
- Each check and the change it guards run under the collection's identity lock
  (`Gallery.identity_lock`): registrations, added photos, renames and merges of one collection take
  turns, so two concurrent registrations of one new face cannot both pass the duplicate check.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from facegate.events import EventLog
from facegate.gallery import DEFAULT_COLLECTION, FaceRecord, Gallery, UserRecord
from facegate.names import clean_name
from facegate.pipeline import EmbeddedFace
from facegate.recognition import Recognizer

logger = logging.getLogger(__name__)


class AlreadyEnrolledError(ValueError):
    """The face is already someone's in the collection (HTTP 409)."""

    def __init__(self, user_id: int, name: str, collection: str) -> None:
        super().__init__(
            f"this face is already registered as {name} (user {user_id}) in the collection "
            f"'{collection}': add the photo to that person, or send allow_duplicate=true"
        )
        self.user_id = user_id
        self.name = name


class NotSamePersonError(ValueError):
    """The photo is not of the person it is added to (HTTP 422)."""

    def __init__(self, user: UserRecord, distance: float, threshold: float) -> None:
        super().__init__(
            f"the face does not look like {user.name} (user {user.id}): distance {distance:.3f} to "
            f"their nearest photo, over the verification threshold {threshold:.3f}; nothing was "
            "stored (send force=true to add it anyway, e.g. for a much older photo)"
        )


class Enrolment:
    def __init__(self, gallery: Gallery, recognizer: Recognizer, events: EventLog) -> None:
        self.gallery = gallery
        self.recognizer = recognizer
        self.events = events

    def register(
        self,
        name: str,
        face: EmbeddedFace,
        collection: str = DEFAULT_COLLECTION,
        *,
        allow_duplicate: bool = False,
    ) -> UserRecord:
        person = clean_name(name)
        with self.gallery.identity_lock(collection):
            if not allow_duplicate:
                self._refuse_known(face, collection)
            return self.gallery.add_user(person, face.embedding, face.face.box, collection, chip=face.chip)

    def register_faces(
        self, name: str, faces: Sequence[EmbeddedFace], collection: str = DEFAULT_COLLECTION
    ) -> tuple[UserRecord, int]:
        """A new person from several faces of them (an unknown visitor's, most detailed first): the
        first under `register`'s rules, then those of the others that look like them. Returns the
        person and how many faces were stored."""
        person = clean_name(name)
        with self.gallery.identity_lock(collection):
            self._refuse_known(faces[0], collection)
            user = self.gallery.add_user(
                person, faces[0].embedding, faces[0].face.box, collection, chip=faces[0].chip
            )
            return user, 1 + self._add_alike(user.id, faces[1:], collection)

    def add_faces(
        self, user_id: int, faces: Sequence[EmbeddedFace], collection: str = DEFAULT_COLLECTION
    ) -> int:
        """Add those of `faces` that look like the person (`add_face`'s rule); NotSamePersonError
        when none does. Returns how many were stored."""
        with self.gallery.identity_lock(collection):
            added = self._add_alike(user_id, faces, collection)
            if not added:
                self._check_same_person(user_id, faces[0], collection, force=False)
            return added

    def _refuse_known(self, face: EmbeddedFace, collection: str) -> None:
        known = self.recognizer.identify([face], collection=collection).largest.person
        if known is not None:
            raise AlreadyEnrolledError(known.user_id, known.name, collection)

    def _add_alike(self, user_id: int, faces: Sequence[EmbeddedFace], collection: str) -> int:
        added = 0
        for face in faces:
            distance = self.gallery.nearest_face_distance(user_id, face.embedding, collection)
            if self.recognizer.policy.verifies(distance).verified:
                self.gallery.add_face(user_id, face.embedding, face.face.box, collection, chip=face.chip)
                added += 1
        return added

    def add_face(
        self, user_id: int, face: EmbeddedFace, collection: str = DEFAULT_COLLECTION, *, force: bool = False
    ) -> FaceRecord:
        with self.gallery.identity_lock(collection):
            self._check_same_person(user_id, face, collection, force=force)
            return self.gallery.add_face(user_id, face.embedding, face.face.box, collection, chip=face.chip)

    def _check_same_person(self, user_id: int, face: EmbeddedFace, collection: str, *, force: bool) -> None:
        distance = self.gallery.nearest_face_distance(user_id, face.embedding, collection)
        verdict = self.recognizer.policy.verifies(distance)
        if not verdict.verified:
            if not force:
                user = self.gallery.get_user(user_id, collection)
                raise NotSamePersonError(user, distance, verdict.threshold)
            logger.warning(
                "a photo at distance %.3f (over %.3f) added to user %d in '%s' by force",
                distance,
                verdict.threshold,
                user_id,
                collection,
            )

    def merge(self, target_id: int, source_id: int, collection: str = DEFAULT_COLLECTION) -> int:
        """Move every face of `source_id` to `target_id` (who keeps their name), deleting
        `source_id`: two records of one person become one, and so do their access-log events.
        Returns how many faces moved."""
        with self.gallery.identity_lock(collection):
            moved = self.gallery.merge_users(target_id, source_id, collection)
            self.events.reassign(source_id, target_id)
            return moved

    def rename(self, user_id: int, name: str, collection: str = DEFAULT_COLLECTION) -> UserRecord:
        person = clean_name(name)
        with self.gallery.identity_lock(collection):
            return self.gallery.rename_user(user_id, person, collection)
