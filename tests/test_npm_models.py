"""Model files from npm packages: fetched by npm's own client at set-up, checked against pinned
checksums, refused when missing or damaged."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from facegate.config import Settings
from facegate.embedding.factory import check_model_files
from facegate.embedding.model_cache import sha256
from facegate.embedding.npm_models import (
    FETCH_COMMAND,
    FR_FEATURE,
    MOBILEFACENET_TFLITE,
    ModelFileError,
    check_integrity,
    fetch,
    model_file,
)


@pytest.fixture(scope="module")
def fetched() -> Path:
    return model_file(FR_FEATURE, Settings().facegate_model_dir)


def test_a_missing_file_names_the_command_that_fetches_it(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match=f"`{FETCH_COMMAND}`") as refused:
        model_file(FR_FEATURE, tmp_path)
    assert FR_FEATURE.spec in str(refused.value) and "FACEGATE_MODEL_DIR" in str(refused.value)


def test_a_damaged_file_is_refused(fetched: Path, tmp_path: Path) -> None:
    damaged = bytearray(fetched.read_bytes())
    damaged[len(damaged) // 2] ^= 0x01
    (tmp_path / FR_FEATURE.filename).write_bytes(bytes(damaged))
    with pytest.raises(ModelFileError, match="damaged or not the pinned file"):
        model_file(FR_FEATURE, tmp_path)
    with pytest.raises(ModelFileError, match="damaged"):
        check_model_files(Settings(_env_file=None, facegate_model_dir=tmp_path))


def test_the_tarball_integrity_is_checked() -> None:
    check_integrity(
        b"", "sha512-z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg=="
    )
    with pytest.raises(ModelFileError, match="sha512"):
        check_integrity(
            b"x",
            "sha512-z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg==",
        )


def test_fetch_downloads_the_pinned_file_with_npm(tmp_path: Path) -> None:
    path = fetch(MOBILEFACENET_TFLITE, tmp_path)  # the smaller package; npm's cache holds it after set-up
    assert path == tmp_path / "MobileFaceNet.tflite"
    assert sha256(path.read_bytes()) == MOBILEFACENET_TFLITE.sha256
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)


def test_fetch_refuses_a_package_that_is_not_the_pinned_one(tmp_path: Path) -> None:
    wrong_integrity = dataclasses.replace(MOBILEFACENET_TFLITE, integrity="sha512-" + "A" * 86 + "==")
    with pytest.raises(ModelFileError, match="integrity"):
        fetch(wrong_integrity, tmp_path)
    wrong_file = dataclasses.replace(MOBILEFACENET_TFLITE, sha256="0" * 64)
    with pytest.raises(ModelFileError, match="not the pinned"):
        fetch(wrong_file, tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_the_service_refuses_to_start_without_its_model(tmp_path: Path) -> None:
    env = {**os.environ, "FACEGATE_MODEL_DIR": str(tmp_path / "empty"), "FACEGATE_DATA_DIR": str(tmp_path)}
    env.pop("FACE_EMBEDDER", None)
    done = subprocess.run(
        [sys.executable, "-m", "facegate", "serve", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert FETCH_COMMAND in done.stderr and "fr_feature.onnx" in done.stderr
    assert "Traceback" not in done.stderr
