"""Export and import of a collection: its people, their embeddings and metadata, in a documented file.

The format ("facegate-gallery", version 2) is JSON Lines in UTF-8, one JSON object per line:

1. a header: `{"format": "facegate-gallery", "version": 2, "model": ..., "dim": ..., "collection":
   ..., "people": N, "faces": M, "exported_at": ..., "embedding_encoding": ..., "notice": ...}`;
2. one line per person: `{"name": ..., "created_at": ..., "faces": [{"embedding": ..., "box":
   [x1, y1, x2, y2], "created_at": ..., "chip": ...}, ...]}`, the embedding as base64 of its `dim`
   float32 values, little-endian; times in ISO 8601 with their UTC offset; `chip` the face's aligned
   chip (facegate.chips) as `{"jpeg": base64, "box": [x1, y1, x2, y2], "keypoints": [[x, y] × 5],
   "score": ...}` in the chip's pixels, or null for a face stored without one;
3. a trailer: `{"sha256": ...}`, the hex SHA-256 of every byte before the trailer line.

Version 1, the same without chips, is still read: its faces are imported without chips (so
`facegate reembed` cannot move them to another model).

Reading it runs no code (no pickle): JSON and base64 only, every value checked. The checksum
catches a damaged, truncated or hand-edited file; it is no signature (whoever can edit the file can
recompute it), so keep export files where only administrators can write them. An import refuses a
file of another model or dimension, and merges by name: see Gallery.merge_people.

Embeddings and chips are biometric data, chips pictures of faces: an export file deserves the
protection the database has. It is written readable by its owner only (mode 0600).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import math
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from facegate.chips import CHIP_SIZE, FaceChip
from facegate.faces import Face
from facegate.gallery.errors import TransferFileError, TransferModelError
from facegate.gallery.schema import DEFAULT_COLLECTION
from facegate.gallery.store import (
    Gallery,
    ImportSummary,
    PortableFace,
    PortablePerson,
    check_collection_name,
)
from facegate.names import InvalidNameError, clean_name

FORMAT = "facegate-gallery"
VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: without chips
_ENCODING = "base64 of float32 little-endian"
_NOTICE = (
    "biometric data: face embeddings and face pictures of identifiable people; "
    "protect this file like the database"
)
_LITTLE_ENDIAN_F32 = np.dtype("<f4")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ExportSummary:
    collection: str
    people: int
    faces: int


@dataclass(frozen=True, slots=True)
class ExportFile:
    """A file read and checked: its header and its people."""

    model: str
    dim: int
    collection: str
    people: list[PortablePerson]


# --- writing -------------------------------------------------------------------------------------


def export_bytes(gallery: Gallery, collection: str = DEFAULT_COLLECTION) -> tuple[bytes, ExportSummary]:
    """The collection as an export file's bytes. UnknownCollectionError."""
    people = gallery.export_people(collection)
    summary = ExportSummary(collection, len(people), sum(len(person.faces) for person in people))
    header = {
        "format": FORMAT,
        "version": VERSION,
        "model": gallery.model,
        "dim": gallery.dim,
        "collection": collection,
        "people": summary.people,
        "faces": summary.faces,
        "exported_at": datetime.now(UTC).isoformat(),
        "embedding_encoding": _ENCODING,
        "notice": _NOTICE,
    }
    body = b"".join([_line(header), *(_line(_person_object(person)) for person in people)])
    return body + _line({"sha256": hashlib.sha256(body).hexdigest()}), summary


def export_file(gallery: Gallery, path: Path, collection: str = DEFAULT_COLLECTION) -> ExportSummary:
    """Write the collection to `path`, atomically (a reader never sees half a file), mode 0600."""
    data, summary = export_bytes(gallery, collection)
    handle, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")  # 0600
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return summary


def _line(value: dict[str, Any]) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def _person_object(person: PortablePerson) -> dict[str, Any]:
    return {
        "name": person.name,
        "created_at": person.created_at.isoformat(),
        "faces": [
            {
                "embedding": base64.b64encode(face.embedding.astype(_LITTLE_ENDIAN_F32).tobytes()).decode(),
                "box": list(face.box),
                "created_at": face.created_at.isoformat(),
                "chip": None if face.chip is None else _chip_object(face.chip),
            }
            for face in person.faces
        ],
    }


def _chip_object(chip: FaceChip) -> dict[str, Any]:
    return {
        "jpeg": base64.b64encode(chip.jpeg).decode(),
        "box": list(chip.face.box),
        "keypoints": np.asarray(chip.face.keypoints, dtype=np.float64).tolist(),
        "score": float(chip.face.score),
    }


# --- reading -------------------------------------------------------------------------------------


def import_bytes(gallery: Gallery, data: bytes, collection: str | None = None) -> ImportSummary:
    """Merge an export file's people into `collection` (by default the one it was exported from),
    creating the collection if needed. TransferFileError (TransferModelError for another model)
    before anything is written; the errors of Gallery.merge_people after."""
    export = read_export(data, gallery.model, gallery.dim)
    return gallery.merge_people(export.people, collection or export.collection, create=True)


def import_file(gallery: Gallery, path: Path, collection: str | None = None) -> ImportSummary:
    return import_bytes(gallery, path.read_bytes(), collection)


def read_export(data: bytes, model: str, dim: int) -> ExportFile:
    """Parse and check an export file for a gallery of `model` and `dim`: the format and version,
    the checksum, the model, then every value. TransferFileError says what is wrong and where."""
    lines = data.split(b"\n")
    if len(lines) < 3 or lines[-1] != b"":
        raise TransferFileError(_not_an_export("it does not end in a header, people and a checksum line"))
    header = _object(lines[0], 1)
    if header.get("format") != FORMAT:
        raise TransferFileError(_not_an_export(f'its first line has no "format": "{FORMAT}"'))
    if header.get("version") not in READABLE_VERSIONS:
        raise TransferFileError(
            f"the file is in version {header.get('version')!r} of the {FORMAT} format; "
            f"this FaceGate reads versions {', '.join(map(str, READABLE_VERSIONS))}"
        )
    _check_sum(data, lines[-2], len(lines) - 1)
    file_model, file_dim = _field(header, "model", str, 1), _field(header, "dim", int, 1)
    if (file_model, file_dim) != (model, dim):
        raise TransferModelError(file_model, file_dim, model, dim)
    collection = _field(header, "collection", str, 1)
    try:
        check_collection_name(collection)
    except ValueError as exc:
        raise TransferFileError(f"line 1: {exc}") from exc
    people = [_person(_object(line, number), number, dim) for number, line in enumerate(lines[1:-2], start=2)]
    faces = sum(len(person.faces) for person in people)
    if (_field(header, "people", int, 1), _field(header, "faces", int, 1)) != (len(people), faces):
        raise TransferFileError(
            f"the header counts {header['people']} people and {header['faces']} faces; "
            f"the file holds {len(people)} and {faces}"
        )
    return ExportFile(file_model, file_dim, collection, people)


def _not_an_export(why: str) -> str:
    return f"not a FaceGate gallery export ({FORMAT} format): {why}"


def _check_sum(data: bytes, trailer: bytes, number: int) -> None:
    expected = _object(trailer, number).get("sha256")
    if not isinstance(expected, str):
        raise TransferFileError("the file is incomplete: its last line is not the checksum (truncated?)")
    body = data[: len(data) - len(trailer) - 1]
    if hashlib.sha256(body).hexdigest() != expected:
        raise TransferFileError(
            "the file's SHA-256 does not match its checksum line: it was damaged or edited after export; "
            "nothing was imported"
        )


def _object(line: bytes, number: int) -> dict[str, Any]:
    try:
        value = json.loads(line.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise TransferFileError(f"line {number}: not a JSON object in UTF-8 ({exc})") from exc
    if not isinstance(value, dict):
        raise TransferFileError(f"line {number}: not a JSON object")
    return value


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number")


def _field(value: dict[str, Any], key: str, kind: type[T], number: int) -> T:
    item = value.get(key)
    if not isinstance(item, kind) or isinstance(item, bool):
        raise TransferFileError(f"line {number}: {key!r} must be a {kind.__name__}")
    return item


def _person(value: dict[str, Any], number: int, dim: int) -> PortablePerson:
    try:
        name = clean_name(_field(value, "name", str, number))
    except InvalidNameError as exc:
        raise TransferFileError(f"line {number}: {exc}") from exc
    faces = _field(value, "faces", list, number)
    if not faces:
        raise TransferFileError(f"line {number}: {name!r} has no faces")
    return PortablePerson(
        name,
        _time(value, number),
        tuple(_face(face, number, dim) for face in faces),
    )


def _base64_field(value: dict[str, Any], key: str, number: int, what: str) -> bytes:
    """The bytes of the base64 string field `key`; TransferFileError naming `what` if it is not base64."""
    try:
        return base64.b64decode(_field(value, key, str, number), validate=True)
    except binascii.Error as exc:
        raise TransferFileError(f"line {number}: {what} is not base64 ({exc})") from exc


def _face(value: object, number: int, dim: int) -> PortableFace:
    if not isinstance(value, dict):
        raise TransferFileError(f"line {number}: a face must be a JSON object")
    raw = _base64_field(value, "embedding", number, "an embedding")
    if len(raw) != 4 * dim:
        raise TransferFileError(
            f"line {number}: an embedding has {len(raw)} bytes, not {4 * dim} ({dim} float32)"
        )
    embedding = np.frombuffer(raw, dtype=_LITTLE_ENDIAN_F32).astype(np.float32)
    if not np.isfinite(embedding).all() or not embedding.any():
        raise TransferFileError(f"line {number}: an embedding is not finite and non-zero")
    box = _field(value, "box", list, number)
    chip = value.get("chip")
    return PortableFace(
        embedding,
        _box(box, number),
        _time(value, number),
        None if chip is None else _chip(chip, number),
    )


def _box(value: list[Any], number: int) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = _finite(value, 4, number, "a box must be 4 finite numbers")
    return x1, y1, x2, y2


def _finite(values: list[Any], count: int, number: int, rule: str) -> list[float]:
    """`values` as floats if they are `count` finite numbers; TransferFileError saying `rule` if not."""
    if len(values) != count or not all(_is_number(v) and math.isfinite(v) for v in values):
        raise TransferFileError(f"line {number}: {rule}")
    return [float(v) for v in values]


def _chip(value: object, number: int) -> FaceChip:
    if not isinstance(value, dict):
        raise TransferFileError(f"line {number}: a chip must be a JSON object or null")
    jpeg = _base64_field(value, "jpeg", number, "a chip's jpeg")
    try:
        with Image.open(io.BytesIO(jpeg)) as picture:  # reads the header only: cheap
            kind, size = picture.format, picture.size
    except (UnidentifiedImageError, OSError) as exc:
        raise TransferFileError(f"line {number}: a chip's jpeg is not an image ({exc})") from exc
    if kind != "JPEG" or size != (CHIP_SIZE, CHIP_SIZE):
        raise TransferFileError(f"line {number}: a chip must be a {CHIP_SIZE} × {CHIP_SIZE} JPEG")
    pairs = _field(value, "keypoints", list, number)
    rule = "a chip's keypoints must be 5 pairs of finite numbers"
    if len(pairs) != 5 or not all(isinstance(pair, list) and len(pair) == 2 for pair in pairs):
        raise TransferFileError(f"line {number}: {rule}")
    keypoints = _finite([v for pair in pairs for v in pair], 10, number, rule)
    (score,) = _finite([value.get("score")], 1, number, "a chip's score must be a finite number")
    box = _box(_field(value, "box", list, number), number)
    return FaceChip(jpeg, Face(box, score, np.array(keypoints, np.float32).reshape(5, 2)))


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _time(value: dict[str, Any], number: int) -> datetime:
    try:
        moment = datetime.fromisoformat(_field(value, "created_at", str, number))
    except ValueError as exc:
        raise TransferFileError(f"line {number}: 'created_at' is not an ISO 8601 time ({exc})") from exc
    if moment.tzinfo is None:
        raise TransferFileError(f"line {number}: 'created_at' needs its UTC offset")
    return moment
