"""The gallery from the command line: enrolling a folder of people, recognising image files,
exporting or importing a collection, and moving the gallery to another model."""

from __future__ import annotations

import csv
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from facegate.config import Settings
from facegate.embedding import create_embedder
from facegate.enrolment import AlreadyEnrolledError, NotSamePersonError
from facegate.events import EventFilter, csv_lines
from facegate.gallery import (
    DEFAULT_COLLECTION,
    ConfusableNameError,
    DuplicateNameError,
    database_dsn,
    transfer,
)
from facegate.gallery.reembed import Reembedding
from facegate.imaging import ImageError, load_image_file
from facegate.names import InvalidNameError, clean_name
from facegate.pipeline import EmbeddedFace, FaceChoice, NoFaceError
from facegate.recognition import Identified
from facegate.services import Core, open_core

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})


@dataclass(frozen=True, slots=True)
class Skipped:
    photo: Path
    reason: str


@dataclass(frozen=True, slots=True)
class Picked:
    """A photo of several faces whose face nearest the centre was taken (`--pick center`)."""

    photo: Path
    box: tuple[float, ...]
    faces: int


@dataclass
class EnrollReport:
    enrolled: int = 0
    already_enrolled: int = 0
    photos_added: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    picked: list[Picked] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"people enrolled: {self.enrolled}, already in the gallery: {self.already_enrolled}, "
            f"photos stored: {self.photos_added}, skipped: {len(self.skipped)}"
        ]
        lines += [
            f"  picked {item.photo}: of {item.faces} faces, the one nearest the centre at "
            f"[{', '.join(f'{v:.0f}' for v in item.box)}]"
            for item in self.picked
        ]
        lines += [f"  skipped {item.photo}: {item.reason}" for item in self.skipped]
        return "\n".join(lines)

    def write_csv(self, path: Path) -> None:
        """Each skipped photo and why, for a spreadsheet or a script to follow up."""
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["photo", "reason"])
            writer.writerows([str(item.photo), item.reason] for item in self.skipped)


def person_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def photos_of(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def enroll_folder(
    root: Path,
    settings: Settings,
    report_file: Path | None = None,
    collection: str = DEFAULT_COLLECTION,
    *,
    pick_center: bool = False,
) -> int:
    """Register each sub-folder of `root` as one person of `collection` (the folder name, `_` read as
    a space, under the API's rules: facegate.enrolment).

    A photo of several faces of similar size is skipped, or with `pick_center` its face nearest the
    image's centre is taken (a subject framed with someone beside them) and the report says which.

    Resumable: a person already in the gallery is skipped, so an interrupted run can simply be
    started again. All photos of a person are embedded before anything is stored, so a person is
    stored with all of their usable photos or, if interrupted, at most partly within milliseconds.
    """
    if not root.is_dir():
        logger.error("%s is not a folder", root)
        return 2
    folders = person_folders(root)
    report = EnrollReport()
    with open_core(settings) as core, logging_redirect_tqdm():
        core.gallery.require_collection(collection)  # UnknownCollectionError before any work
        # Log lines go through the bar's writer, above the bar, instead of breaking it.
        for folder in tqdm(folders, desc="enrolling", unit="person", file=sys.stderr):
            _enroll_person(folder, core, collection, report, pick_center=pick_center)
    print(report.summary())
    if report_file is not None:
        report.write_csv(report_file)
        print(f"skipped photos listed in {report_file}")
    return 0


def _enroll_person(
    folder: Path, core: Core, collection: str, report: EnrollReport, *, pick_center: bool
) -> None:
    faces: list[tuple[Path, EmbeddedFace]] = []
    for photo in photos_of(folder):
        try:
            faces.append((photo, _photo_face(photo, core, report, pick_center=pick_center)))
        except (ImageError, OSError) as exc:
            report.skipped.append(Skipped(photo, f"unreadable image ({exc})"))
        except NoFaceError as exc:
            report.skipped.append(Skipped(photo, str(exc)))
    if not faces:
        report.skipped.append(Skipped(folder, "no usable photo, so the person was not enrolled"))
        return
    name = folder.name.replace("_", " ")
    try:
        user = core.enrolment.register(name, faces[0][1], collection)
    except DuplicateNameError:
        report.already_enrolled += 1
        return
    except AlreadyEnrolledError as exc:
        if exc.name == clean_name(name):  # a run resumed after this person was stored
            report.already_enrolled += 1
        else:
            report.skipped.append(Skipped(folder, str(exc)))
        return
    except (InvalidNameError, ConfusableNameError) as exc:
        report.skipped.append(Skipped(folder, f"the folder's name cannot be a person's name: {exc}"))
        return
    stored = 1
    for photo, face in faces[1:]:
        try:
            core.enrolment.add_face(user.id, face, collection)
            stored += 1
        except NotSamePersonError as exc:  # a photo of someone else in the person's folder
            report.skipped.append(Skipped(photo, str(exc)))
    report.enrolled += 1
    report.photos_added += stored


def _photo_face(photo: Path, core: Core, report: EnrollReport, *, pick_center: bool) -> EmbeddedFace:
    """The photo's one face; with `pick_center`, of several, the one nearest the centre (reported)."""
    image = load_image_file(photo)
    try:
        return core.pipeline.single_face(image)
    except NoFaceError as exc:
        if not (pick_center and exc.faces):
            raise
        face = core.pipeline.single_face(image, FaceChoice(center=True))
        report.picked.append(Picked(photo, face.face.box, len(exc.faces)))
        return face


def recognize_files(
    paths: Sequence[Path], settings: Settings, threshold: float | None, collection: str = DEFAULT_COLLECTION
) -> int:
    failures = 0
    with open_core(settings) as core:
        chosen = core.policy.threshold(core.gallery.size(collection), threshold)
        logger.info(
            "match threshold %.4f (%s, %d people)", chosen.distance, chosen.source, chosen.gallery_size
        )
        for path in paths:
            try:
                faces = core.pipeline.analyse(load_image_file(path))
            except (ImageError, OSError) as exc:
                logger.error("%s: %s", path, exc)
                failures += 1
                continue
            print(f"{path}: {len(faces)} face(s)")
            if faces:
                for identified in core.recognizer.identify(faces, threshold, collection).faces:
                    box = ", ".join(f"{v:.0f}" for v in identified.face.face.box)
                    print(f"  [{box}] {_verdict(identified)}")
    return 1 if failures else 0


def _verdict(identified: Identified) -> str:
    if identified.face.problem is not None:
        return f"not searched: {identified.face.problem}"
    nearest = identified.nearest
    if nearest is None:
        return "unknown (the gallery is empty)"
    similarity = f"distance {nearest.distance:.3f}, similarity {identified.similarity:.2f}"
    return f"{nearest.name} ({similarity})" if identified.is_match else f"unknown (nearest: {similarity})"


def print_events(settings: Settings, which: EventFilter, limit: int | None) -> int:
    """The access log's events `which` selects, newest first: `limit` of them as lines for a person
    to read, or (None) all as CSV for a spreadsheet."""
    with open_core(settings) as core:
        if limit is None:
            for chunk in csv_lines(core.events.all(which)):
                sys.stdout.write(chunk)
            return 0
        for event in core.events.page(which, limit=limit):
            who = event.user_name or ("unknown" if event.status == "no_match" else event.quality or "")
            distance = "" if event.distance is None else f" distance {event.distance:.3f}"
            print(
                f"{event.at.astimezone():%Y-%m-%d %H:%M:%S} #{event.id} {event.collection} {event.source} "
                f"key {event.key_name}: {event.status} {who}{distance}"
            )
    return 0


def export_collection(settings: Settings, path: Path, collection: str) -> int:
    """Write the collection's people and embeddings to `path` (facegate.gallery.transfer's format)."""
    with open_core(settings) as core:
        summary = transfer.export_file(core.gallery, path, collection)
    print(f"exported {summary.people} people and {summary.faces} faces of '{summary.collection}' to {path}")
    print("the file holds biometric data (face embeddings): protect it like the database")
    return 0


def import_collection(settings: Settings, path: Path, collection: str | None) -> int:
    """Merge an export file into `collection` (default: the one it came from), by name."""
    with open_core(settings) as core:
        summary = transfer.import_file(core.gallery, path, collection)
    print(
        f"imported into '{summary.collection}': {summary.people_added} people added, "
        f"{summary.people_merged} already there (merged by name), {summary.faces_added} faces added, "
        f"{summary.faces_skipped} already stored"
    )
    return 0


def reembed_gallery(settings: Settings, batch_size: int) -> int:
    """Move the gallery to the configured model (FACE_EMBEDDER) by embedding every stored face's
    chip again (facegate.gallery.reembed); an interrupted run leaves it as it was, and resumes."""
    embedder = create_embedder(settings)
    with database_dsn(settings) as dsn, Reembedding.open(dsn, embedder, batch_size) as job:
        if not job.needed:
            print(f"the gallery is already on {embedder.name} ({embedder.dim}-D): nothing to do")
            return 0
        try:
            with (
                logging_redirect_tqdm(),
                tqdm(
                    total=job.resumed + job.pending,
                    initial=job.resumed,
                    desc="re-embedding",
                    unit="face",
                    file=sys.stderr,
                ) as bar,
            ):
                for done in job.batches():
                    bar.update(done)
        except KeyboardInterrupt:
            logger.error("interrupted: the gallery is unchanged; run `facegate reembed` again to resume")
            return 130
        summary = job.switch()
    print(
        f"the gallery moved from {summary.previous_model} ({summary.previous_dim}-D) to {summary.model} "
        f"({summary.dim}-D): {summary.faces} faces"
        + (f", {summary.resumed} of them embedded by an earlier run" if summary.resumed else "")
    )
    return 0
