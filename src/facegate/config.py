"""Every setting of the service, read from the environment (and `.env`) in one place."""

from __future__ import annotations

import os
import secrets
import socket
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import quote

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from facegate.quality import QualityBounds
    from facegate.runtime import RuntimeOptions

# Calibrated on the shared photos by benchmarks/quality.py (BENCHMARKS.md, Quality gate).
QUALITY_DEFAULTS = {"min_eye_distance": 12.0, "min_sharpness": 0.05, "max_yaw": 1.0}
# Used when the embedder has no false-match calibration and FACE_MATCH_THRESHOLD is unset.
UNCALIBRATED_MATCH_THRESHOLD = 0.06
# FACE_VERIFY_THRESHOLD's default: the one-to-one comparison (/verify, a photo added to a person).
VERIFY_THRESHOLD = 0.086

# What one worker process keeps busy by default (see `Settings.workers`).
CORES_PER_WORKER = 2


class Settings(BaseSettings):
    """Service configuration. Field names map to env vars case-insensitively (`APP_TOKEN`, ...)."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", env_ignore_empty=True
    )

    # --- auth ---
    app_token: SecretStr | None = Field(
        default=None, description="Admin API key for the X-API-Key header. Required to serve the API."
    )

    facegate_api_keys: SecretStr = Field(
        default=SecretStr(""),
        description="Extra keys with a scope: name:scope:key,... (scopes detect, recognize, admin, audit)",
    )

    # --- storage ---
    facegate_data_dir: Path = Field(
        default=Path("data"),
        description="Embedded database, converted models and the generated key live here.",
    )
    database_url: str | None = Field(
        default=None, description="postgresql://... of an external server; unset = embedded PostgreSQL."
    )
    db_host: str | None = None
    db_port: int = 5432
    db_name: str = "facegate"
    db_user: str = "postgres"
    db_password: SecretStr | None = None
    db_pool_min: int = Field(default=1, ge=1)
    db_pool_max: int = Field(default=8, ge=1)
    db_timeout: float = Field(default=5.0, gt=0, description="Seconds to wait for a database connection.")

    # --- recognition ---
    face_embedder: Literal["onnx", "dlib", "arcface", "facenet", "fusion"] = Field(
        default="onnx",
        description=(
            "onnx/dlib: dlib's ResNet; arcface: ARCFACE_MODEL_PATH; facenet, fusion (dlib + FaceNet): "
            "the optional extra facegate[fusion]."
        ),
    )
    arcface_model_path: Path | None = None
    # One-to-many search: the threshold follows the gallery's size so that a stranger's chance of
    # being named stays at FACE_MATCH_FPIR (facegate.recognition); a set threshold overrides it.
    face_match_fpir: float = Field(
        default=0.01,
        gt=0.0,
        lt=1.0,
        description="Share of searches by a never-enrolled person that may name someone (policy target).",
    )
    face_match_threshold: float | None = Field(
        default=None,
        ge=0.0,
        le=2.0,
        description="A fixed cosine-distance threshold for /recognize instead of the FACE_MATCH_FPIR policy.",
    )
    face_match_margin: float = Field(
        default=0.8,
        gt=0.0,
        le=1.0,
        description="The nearest person must be within this share of the next one's distance (1 = off).",
    )
    # One-to-one verification: the best LFW fold-1 accuracy is at 0.086 (benchmarks/calibrate.py).
    face_verify_threshold: float = Field(default=VERIFY_THRESHOLD, ge=0.0, le=2.0)

    # --- face quality (benchmarks/quality.py) ---
    quality_min_eye_distance: float = Field(
        default=QUALITY_DEFAULTS["min_eye_distance"], ge=0.0, description="Pixels between the eyes, at least."
    )
    quality_min_sharpness: float = Field(
        default=QUALITY_DEFAULTS["min_sharpness"], ge=0.0, description="Fine detail of the face, at least."
    )
    quality_max_yaw: float = Field(
        default=QUALITY_DEFAULTS["max_yaw"], gt=0.0, description="How far the face may be turned (|yaw|)."
    )
    hnsw_ef_search: int = Field(default=200, ge=1, le=1000)

    # --- access log (facegate.events) ---
    events: Literal["off", "decisions", "faces"] = Field(
        default="decisions",
        description="What each recognition decision leaves in the access log: nothing, the decision "
        "(time, key, status, person, distance), or the decision with the face's chip (a small JPEG)",
    )
    event_retention_days: int = Field(
        default=30, ge=1, le=36_500, description="Days an event is kept; older ones are purged."
    )
    event_stream_dedup_s: float = Field(
        default=10.0,
        ge=0.0,
        le=86_400,
        description="/ws/recognize logs a person (or an unknown face) once per this many seconds",
    )

    # --- liveness (WS /ws/liveness) ---
    liveness_timeout: float = Field(default=20.0, gt=0, le=300, description="Seconds a session lasts.")
    liveness_max_frames: int = Field(default=400, ge=1, description="Frames a session may use.")
    liveness_planar_residual: float = Field(
        default=0.08, gt=0, description="Out-of-plane residual a turn needs (liveness_calibrate.py)."
    )
    liveness_turn_yaw: float = Field(default=0.35, gt=0, lt=1, description="Yaw index a turn must reach.")

    # --- limits ---
    max_upload_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(default=40_000_000, ge=1)

    # --- runtime ---
    max_concurrent_inference: int = Field(
        default=2, ge=1, description="Images decoded or run through the models at once per process."
    )
    max_inference_queue: int = Field(
        default=16, ge=0, description="Requests that may wait for inference per process; beyond: 503."
    )
    request_timeout: float = Field(
        default=30.0, gt=0, description="Seconds a request may take before it is answered 504."
    )
    rate_limit_per_minute: int = Field(
        default=600, ge=0, description="Requests per minute per API key (token bucket); 0 = no limit."
    )
    rate_limit_burst: int = Field(
        default=100, ge=1, description="Requests a key may make at once before the rate applies."
    )
    api_root_path: str = Field(default="", description="Path prefix the API is served under by a proxy.")
    header_timeout: float = Field(
        default=10.0, gt=0, description="Seconds a client may take to send a request's line and headers."
    )
    max_connections: int = Field(
        default=512,
        ge=1,
        description="Open connections per worker (`facegate serve`); beyond, new ones are closed at once.",
    )
    instance_name: str = Field(
        default_factory=socket.gethostname,
        description="This replica's name in /health; set it where replicas share a hostname (host network).",
    )
    onnx_threads: int = Field(
        default=0,
        ge=0,
        description=(
            "Threads per ONNX Runtime session (MTCNN: parallel lanes of one thread); "
            "0 = the CPU cores shared out among the workers."
        ),
    )
    web_concurrency: int | None = Field(
        default=None,
        ge=1,
        description="API worker processes (`facegate serve`, `up`); unset = one per two cores, at least one.",
    )
    onnx_providers: str = Field(
        default="auto", description="Comma-separated ONNX Runtime providers, or 'auto' (CUDA when available)."
    )
    gpu_batch_wait_ms: float = Field(
        default=2.0,
        ge=0,
        description=(
            "Milliseconds an embedder on CUDA gathers concurrent requests' faces for one run; "
            "0 = no batching. Never used on CPU."
        ),
    )
    log_level: str = "INFO"

    # --- UI ---
    api_url: str = "http://127.0.0.1:8000"
    ui_browser_api_url: str = Field(
        default="",
        description="The API's address as the user's browser reaches it (Liveness page); empty = API_URL.",
    )

    @field_validator("facegate_data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    def workers(self) -> int:
        """`WEB_CONCURRENCY`, else one worker per two cores: one worker's models already keep two
        cores busy (MTCNN's two lanes), and a second worker on them only contends (BENCHMARKS.md, Load)."""
        return self.web_concurrency or max(1, available_cores() // CORES_PER_WORKER)

    def session_threads(self) -> int:
        """`ONNX_THREADS`, else this worker's share of the cores: more threads than cores only contend."""
        return self.onnx_threads or max(1, available_cores() // self.workers())

    def quality_bounds(self) -> QualityBounds:
        from facegate.quality import QualityBounds  # config stays importable without numpy

        return QualityBounds(self.quality_min_eye_distance, self.quality_min_sharpness, self.quality_max_yaw)

    def providers(self) -> tuple[str, ...] | None:
        """`ONNX_PROVIDERS` without blanks or repeats; None for `auto`."""
        if self.onnx_providers.strip().lower() == "auto":
            return None
        names = [name.strip() for name in self.onnx_providers.split(",") if name.strip()]
        return tuple(dict.fromkeys(names)) or None

    def runtime(self) -> RuntimeOptions:
        """How every ONNX Runtime session of this worker runs: ONNX_PROVIDERS, its thread share and
        GPU_BATCH_WAIT_MS."""
        from facegate.runtime import RuntimeOptions  # config stays importable without onnxruntime

        return RuntimeOptions(self.providers(), self.session_threads(), self.gpu_batch_wait_ms / 1000)

    def browser_api_url(self) -> str:
        """Where the browser's pages open their sockets: relative (`/api`) resolves against the page."""
        return self.ui_browser_api_url or self.api_url

    def external_dsn(self) -> str | None:
        """The DSN of an external server from `DATABASE_URL` or the `DB_*` variables; None = embedded."""
        if self.database_url:
            return self.database_url
        if self.db_host:
            password = self.db_password.get_secret_value() if self.db_password else ""
            auth = quote(self.db_user, safe="") + (f":{quote(password, safe='')}" if password else "")
            return f"postgresql://{auth}@{self.db_host}:{self.db_port}/{quote(self.db_name, safe='')}"
        return None

    def api_key(self) -> str | None:
        """`APP_TOKEN`, else the key the run command generated into the data directory."""
        if self.app_token:
            return self.app_token.get_secret_value()
        if self.api_key_file.is_file():
            return self.api_key_file.read_text().strip() or None
        return None

    @property
    def api_key_file(self) -> Path:
        return self.facegate_data_dir / "api_key"

    def ensure_api_key(self) -> str:
        """The API key, generating one into `api_key_file` (mode 0600) when none is configured."""
        key = self.api_key()
        if key is None:
            key = secrets.token_urlsafe(32)
            self.facegate_data_dir.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(self.api_key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(key + "\n")
        return key


def available_cores() -> int:
    """The CPU cores this process may run on (a container's CPU set, not the host's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@lru_cache
def get_settings() -> Settings:
    return Settings()
