"""The one Settings object: embedded defaults for a laptop, overridable by COMMENTDESK_* variables.

Nested sections use ``__``: ``COMMENTDESK_API__MAX_COMMENTS=64``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from model.encoder import BASE_ENCODER_SHA256
from model.explain import MAX_ROWS
from model.scorer import Runtime

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# The served default: the multi-task MiniLM with its encoder also adapted to brand_comments dev's
# question and sentiment labels (cross-validated); PUBLIC_MODEL_DIR is the same network before
# that step, which never saw brand_comments dev (for benchmarks that use that set as data).
DEFAULT_MODEL_DIR = PROJECT_ROOT / "artifacts" / "minilm-brand"
PUBLIC_MODEL_DIR = PROJECT_ROOT / "artifacts" / "minilm"
BASELINE_MODEL_DIR = PROJECT_ROOT / "artifacts" / "baseline"


def default_data_dir() -> Path | None:
    """``../shared/data`` beside the project (or the working directory), when it exists."""
    for base in (PROJECT_ROOT, Path.cwd()):
        candidate = (base / ".." / "shared" / "data").resolve()
        if candidate.is_dir():
            return candidate
    return None


class ApiSettings(BaseModel):
    max_comments: int = Field(default=256, ge=1, description="Comments per /v1/score request.")
    max_chars: int = Field(default=5000, ge=1, description="Characters per comment.")
    max_body_bytes: int = Field(default=8_000_000, ge=1024, description="Request body size limit.")
    explain_max_rows: int = Field(
        default=MAX_ROWS,
        ge=3,
        description="Model rows per explained comment: a comment with more words is explained "
        "coarse to fine (runs of words, then the runs that matter word by word).",
    )
    max_explained: int = Field(
        default=16,
        ge=1,
        description="Comments per /v1/score request with explain=true (each one costs up to "
        "explain_max_rows model rows).",
    )
    key_cache_seconds: float = Field(
        default=10.0,
        ge=0,
        description="How long a verified API key is trusted without a database lookup "
        "(a key revoked elsewhere stops working within this time).",
    )
    rate_limit_per_second: float = Field(
        default=50.0,
        ge=0,
        description="Sustained requests per second per API key (token bucket, per worker "
        "process); over it: 429 with Retry-After. 0 turns rate limiting off.",
    )
    rate_limit_burst: int = Field(
        default=200, ge=1, description="Requests a key may send at once before the rate applies."
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Browser origins allowed to call the API cross-site (CORS); none by default.",
    )


class DatabaseSettings(BaseModel):
    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default: a SQLite file in state_dir. PostgreSQL: "
        "postgresql+psycopg://user@host:5432/db",
    )
    auto_migrate: bool = Field(default=True, description="Apply migrations at start-up.")


class QueueSettings(BaseModel):
    lease_seconds: int = Field(default=300, ge=1, description="How long a claim holds an item.")
    max_ingest: int = Field(default=1000, ge=1, description="Comments per ingest request.")
    max_claim: int = Field(default=100, ge=1, description="Items per claim request.")
    max_bulk_decisions: int = Field(default=500, ge=1, description="Decisions per bulk request.")
    max_page: int = Field(default=500, ge=1, description="Items per queue page.")


class ReplySettings(BaseModel):
    encoder_dir: Path | None = Field(
        default=None,
        description="Sentence encoder for template similarity (default: the pinned MiniLM).",
    )
    encoder_sha256: str = Field(
        default=BASE_ENCODER_SHA256,
        description="sha256 its model.safetensors must have.",
    )
    queue_suggestions: int = Field(
        default=3, ge=0, le=20, description="Suggestions on each queue item."
    )


class ScoringSettings(BaseModel):
    runtime: Runtime = Field(
        default="onnx",
        description="Transformer models: int8 ONNX (no torch in the process) or PyTorch.",
    )
    threads: int = Field(
        default=0, ge=0, description="Parallel single-threaded model runs; 0: one per core."
    )
    micro_batch_wait_ms: float = Field(
        default=2.0,
        ge=0,
        description="How long the server gathers concurrent requests into one model call.",
    )
    micro_batch_max: int = Field(default=64, ge=1, description="Comments per gathered model call.")
    deadline_ms: float = Field(
        default=2000.0, gt=0, description="A scoring request answers 503 rather than wait longer."
    )


class ServerSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535, description="0: any free port.")
    access_log: bool = Field(default=True, description="One log line per request.")
    require_model: bool = Field(
        default=True,
        description="Refuse to start, saying why, when the model cannot be loaded (corrupted, "
        "malformed or mismatched); false: stay up with /readyz answering 503.",
    )
    workers: int = Field(default=1, ge=1, description="Server processes (serve --workers).")
    log_format: Literal["json", "text"] = Field(
        default="json", description="json: one object per line with the request id; text: plain."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    metrics: bool = Field(default=True, description="Serve Prometheus metrics at /metrics.")
    opentelemetry: bool = Field(
        default=False,
        description="FastAPI's native OpenTelemetry spans, metrics and logs through the globally "
        "configured providers; off, requests skip the provider lookup (~30 us each).",
    )
    metrics_token: str | None = Field(
        default=None,
        description="When set, /metrics asks for 'Authorization: Bearer <token>' (Prometheus "
        "bearer_token); otherwise restrict /metrics at the reverse proxy.",
    )


class BatchSettings(BaseModel):
    worker: bool = Field(
        default=True, description="Run uploaded batch jobs in this process (one at a time)."
    )
    max_upload_bytes: int = Field(
        default=2_000_000_000, ge=1024, description="Largest file POST /v1/batches accepts."
    )
    chunk_rows: int = Field(default=2048, ge=1, description="Rows per chunk and resume point.")
    poll_seconds: float = Field(
        default=1.0, gt=0, description="How often the worker looks for jobs."
    )


class UiSettings(BaseModel):
    session_hours: float = Field(
        default=12, gt=0, description="How long a moderator stays signed in to /ui."
    )
    page_size: int = Field(default=50, ge=1, le=500, description="Cards on one queue page.")
    poll_seconds: float = Field(
        default=5, gt=0, description="How often the queue page asks for new items."
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="COMMENTDESK_", env_nested_delimiter="__", extra="ignore"
    )

    model_dir: Path = Field(default=DEFAULT_MODEL_DIR, description="Directory of the served model.")
    data_dir: Path | None = Field(
        default_factory=default_data_dir, description="Directory of the labelled data sets."
    )
    state_dir: Path = Field(
        default=PROJECT_ROOT / "var", description="Where the embedded SQLite database lives."
    )
    policy_file: Path = Field(
        default=PROJECT_ROOT / "configs" / "policy.toml", description="Moderation policy (TOML)."
    )
    api: ApiSettings = Field(default_factory=ApiSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    replies: ReplySettings = Field(default_factory=ReplySettings)
    scoring: ScoringSettings = Field(default_factory=ScoringSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    ui: UiSettings = Field(default_factory=UiSettings)
    batch: BatchSettings = Field(default_factory=BatchSettings)

    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.state_dir / 'commentdesk.db'}"

    @field_validator("data_dir")
    @classmethod
    def _data_dir_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError(f"data directory {value} does not exist")
        return value
