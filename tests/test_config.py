"""Settings: env var names, the database DSN and the API key file."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from facegate.config import Settings


def settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for name in ("APP_TOKEN", "DATABASE_URL", "DB_HOST", "DB_PASSWORD", "FACEGATE_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)


def test_defaults_use_the_embedded_database(monkeypatch: pytest.MonkeyPatch) -> None:
    config = settings(monkeypatch)
    assert config.external_dsn() is None
    assert config.face_embedder == "mobilefacenet512"
    assert config.max_upload_bytes == 20 * 1024 * 1024
    assert config.max_image_pixels == 40_000_000
    assert config.facegate_data_dir.is_absolute()


def test_database_url_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    config = settings(monkeypatch, DATABASE_URL="postgresql://u:p@db:5432/x", DB_HOST="other")
    assert config.external_dsn() == "postgresql://u:p@db:5432/x"


def test_seed_compatible_db_variables_build_a_dsn(monkeypatch: pytest.MonkeyPatch) -> None:
    config = settings(
        monkeypatch,
        DB_HOST="db.local",
        DB_PORT="6543",
        DB_NAME="faces",
        DB_USER="svc",
        DB_PASSWORD="p@ss:word",
    )
    assert config.external_dsn() == "postgresql://svc:p%40ss%3Aword@db.local:6543/faces"


def test_empty_variables_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    config = settings(monkeypatch, DATABASE_URL="", APP_TOKEN="", FACEGATE_DATA_DIR="")
    assert config.external_dsn() is None
    assert config.app_token is None


@pytest.mark.parametrize(
    ("name", "value"),
    [("FACE_MATCH_THRESHOLD", "-0.1"), ("FACE_MATCH_THRESHOLD", "3"), ("FACE_EMBEDDER", "magic"),
     ("MAX_CONCURRENT_INFERENCE", "0"), ("DB_PORT", "port")],
)  # fmt: skip
def test_invalid_values_are_refused_at_start(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    with pytest.raises(ValidationError, match=name.lower()):
        settings(monkeypatch, **{name: value})


def test_api_key_from_env_or_generated_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert settings(monkeypatch, APP_TOKEN="abc", FACEGATE_DATA_DIR=str(tmp_path)).ensure_api_key() == "abc"
    assert not (tmp_path / "api_key").exists()

    config = settings(monkeypatch, FACEGATE_DATA_DIR=str(tmp_path))
    assert config.api_key() is None
    generated = config.ensure_api_key()
    assert len(generated) >= 32
    assert (tmp_path / "api_key").stat().st_mode & 0o777 == 0o600
    assert settings(monkeypatch, FACEGATE_DATA_DIR=str(tmp_path)).ensure_api_key() == generated  # stable


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("auto", None),
        (" AUTO ", None),
        ("CPUExecutionProvider", ("CPUExecutionProvider",)),
        ("CPUExecutionProvider, CPUExecutionProvider", ("CPUExecutionProvider",)),
        ("CUDAExecutionProvider ,CPUExecutionProvider,", ("CUDAExecutionProvider", "CPUExecutionProvider")),
    ],
)
def test_onnx_providers_are_parsed_once_for_every_model(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: tuple[str, ...] | None
) -> None:
    assert settings(monkeypatch, ONNX_PROVIDERS=value).providers() == expected


def test_detection_and_embedding_accept_spaces_in_the_provider_list(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from facegate.embedding import create_embedder
    from facegate.pipeline import create_detector

    providers = "CPUExecutionProvider, CPUExecutionProvider"
    config = settings(monkeypatch, ONNX_PROVIDERS=providers, FACEGATE_DATA_DIR=str(tmp_path))
    assert create_detector(config).detect(np.zeros((64, 64, 3), np.uint8)) == []
    assert create_embedder(config).dim == 512


def test_liveness_bounds_default_to_the_settings_and_the_models_calibration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from facegate.liveness.session import TURNED_FMR, LivenessLimits
    from facegate.recognition import Calibration, MatchPolicy

    def limits(model: str, **env: str) -> LivenessLimits:
        config = settings(monkeypatch, **env)
        return LivenessLimits.from_settings(config, MatchPolicy.from_settings(config, model))

    # `LivenessLimits()` holds dlib's bounds, which its calibration reproduces.
    dlib = limits("dlib_resnet_v1+mirror")
    assert dlib.match_threshold == pytest.approx(LivenessLimits().match_threshold, abs=0.003)
    assert dlib.turned_match_threshold == pytest.approx(LivenessLimits().turned_match_threshold, abs=0.003)
    # Another model's bounds are its own: its one-to-one threshold, the same false-match rate turned.
    model = "mobilefacenet512_faceplugin_v1+mirror"
    calibration = Calibration.load(model)
    assert calibration is not None
    default = limits(model)
    assert default.match_threshold == calibration.verify_threshold
    assert default.turned_match_threshold == calibration.distance_at(TURNED_FMR) > default.match_threshold
    changed = limits(model, FACE_VERIFY_THRESHOLD="0.07", LIVENESS_TIMEOUT="5")
    assert (changed.match_threshold, changed.timeout_s) == (0.07, 5.0)


def test_instance_name_defaults_to_the_hostname(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings(monkeypatch).instance_name == socket.gethostname()
    assert settings(monkeypatch, INSTANCE_NAME="api-2").instance_name == "api-2"  # replicas on one host
