"""Settings read from the environment (prefix ``PEERBLEND_``).

Read only at the edges: the CLI, worker start-up, ``workers.connect``. Pipeline
functions receive plain values, never this object.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.errors import ConfigError


def _home() -> Path:
    return Path.home() / ".peerblend"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PEERBLEND_", extra="ignore")

    environment: Literal["development", "production"] = "development"
    home: Path = Field(default_factory=_home)  # embedded database, model cache
    broker_url: str | None = None  # e.g. redis://127.0.0.1:6379/0; unset = embedded
    result_backend: str | None = None  # e.g. redis://127.0.0.1:6379/1
    database_url: str | None = None  # e.g. postgresql+psycopg://user@host/db; unset = SQLite
    committee_file: Path | None = None  # unset = the default offline committee
    default_queue: str = "peerblend"  # aggregation and control tasks
    # Redis redelivers a task unacknowledged for this long. Unset: derived from the longest a
    # task may take (the members' time limits plus the store retry budget, see task_bound_s).
    visibility_timeout_s: int | None = Field(default=None, ge=60)
    generation_time_limit_s: float = Field(default=600.0, gt=0)  # a member's call, unless it sets timeout_s
    store_retry_s: float = Field(default=600.0, ge=0)  # how long a finished turn's write is retried
    result_expires_s: int = Field(default=3600, ge=60)  # task results in Redis (the database keeps turns)
    # What one submitted conversation may carry (characters, turns); beyond, submit refuses it.
    max_question_chars: int = Field(default=8_000, ge=1)
    max_passage_chars: int = Field(default=100_000, ge=0)
    max_turns: int = Field(default=200, ge=1)
    # The chat endpoint (peerblend serve): bearer keys (comma-separated; required in production)
    # and how long a request waits for its turn before answering 504.
    api_keys: str | None = None
    turn_timeout_s: float = Field(default=600.0, gt=0)
    flower_url: str | None = None  # the web pages link each turn to its tasks in Flower
    report_dir: Path = Path("docs/results")  # where `peerblend report` writes (the runs page shows it)
    embedded_concurrency: int = Field(default=8, ge=1)  # threads of the in-process worker
    model_cache_dir: Path | None = None  # unset = ~/.cache/peerblend/models (shared by every home)
    data_dir: Path | None = None  # fetched datasets; unset = the user's cache dir (see datasets_dir)
    torch_threads: int | None = None  # per worker process; unset = torch's default
    preload_models: bool = True  # a worker loads its queues' models at start (fails fast)
    # Gather concurrent tasks' calls to a local model into batches of up to batch_max items
    # (1 = no batching); a batch waits at most batch_window_ms for company after its first.
    batch_max: int = Field(default=16, ge=1)
    batch_window_ms: float = Field(default=20.0, ge=0)
    # Offer the test backends ("scripted": no model, scripted replies) to committees; the test
    # suite and benchmarks set PEERBLEND_TEST_BACKENDS=1, users never need it.
    test_backends: bool = False

    @model_validator(mode="after")
    def _distributed_needs_all(self) -> Settings:
        given = [self.broker_url, self.result_backend, self.database_url]
        if self.broker_url and not self.result_backend:
            raise ConfigError(
                "PEERBLEND_BROKER_URL is set but PEERBLEND_RESULT_BACKEND is not; "
                "set it to a Redis URL (other backends unlock chords by polling)"
            )
        if self.environment == "production" and not all(given):
            raise ConfigError(
                "production needs PEERBLEND_BROKER_URL, PEERBLEND_RESULT_BACKEND and PEERBLEND_DATABASE_URL"
            )
        return self

    @property
    def embedded(self) -> bool:
        return self.broker_url is None

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'peerblend.db'}"

    @property
    def models_dir(self) -> Path:
        return self.model_cache_dir or Path.home() / ".cache" / "peerblend" / "models"

    @property
    def datasets_dir(self) -> Path:
        """Where ``peerblend data fetch`` keeps datasets: $XDG_CACHE_HOME (or ~/.cache)/peerblend/data."""
        cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return self.data_dir or Path(cache) / "peerblend" / "data"


def api_keys(settings: Settings) -> frozenset[str]:
    """The chat endpoint's accepted bearer keys (empty: no authentication)."""
    return frozenset(k.strip() for k in (settings.api_keys or "").split(",") if k.strip())
