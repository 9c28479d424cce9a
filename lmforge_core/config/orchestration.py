"""Settings section for the Prefect flows, schedules and human review (``LMFORGE_ORCHESTRATION__*``)."""

from __future__ import annotations

from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, field_validator


class ReviewConfig(BaseModel):
    """When a person must look at a candidate before it is published, and what happens if nobody does."""

    # every candidate that passes the gate waits for a person (not only the gate's "needs_review" ones).
    required: bool = False
    timeout_s: int = Field(3600, ge=1, description="how long a run waits for a reviewer")
    # applied and recorded (reviewer "lmforge:timeout") when the wait ends without a decision.
    default: Literal["approve", "reject"] = "reject"
    poll_interval_s: int = Field(5, ge=1, description="how often a paused local run checks for the decision")


class RetryConfig(BaseModel):
    """Retries of tasks whose failures are transient (S3, database, Triton): exponential backoff."""

    retries: int = Field(3, ge=0)
    backoff_s: float = Field(10.0, ge=0, description="first delay; doubles each retry")
    jitter_factor: float = Field(0.2, ge=0)


class TimeoutConfig(BaseModel):
    """Upper bounds of one attempt of each stage's task, in seconds."""

    ingest_s: int = Field(6 * 3600, ge=1)
    train_s: int = Field(24 * 3600, ge=1)
    evaluate_s: int = Field(2 * 3600, ge=1)
    publish_s: int = Field(3600, ge=1)


class OrchestrationConfig(BaseModel):
    """Schedules, concurrency, retries, timeouts and review of the nightly retraining."""

    timezone: str = "UTC"
    nightly_cron: str = "0 2 * * *"
    # missed nights: "latest" runs only the newest due night (each run takes every new shard anyway);
    # "all" runs each missed night in order.
    catchup: Literal["latest", "all"] = "latest"
    # Prefect global concurrency limit held by every training: one slot, so two never run at once.
    training_limit: str = "lmforge-training"
    training_slots: int = Field(1, ge=1)
    # how long a training waits for the slot before its night fails, naming the limit (never forever: a
    # slot nobody frees must not hold every later night).
    training_slot_timeout_s: float = Field(6 * 3600, gt=0)
    # a training's slot is a Prefect lease its process renews (every 3/4 of this); when the process dies
    # (killed, its machine lost), the server frees the slot at most this long after (Prefect's minimum: 60 s).
    training_lease_s: float = Field(120, ge=60, le=24 * 3600)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    timeouts: TimeoutConfig = Field(default_factory=TimeoutConfig)
    review: ReviewConfig = Field(default_factory=ReviewConfig)
    # Prefect result storage (persisted task results for caching); None: <workspace>/prefect-results.
    result_storage: str | None = None
    deployment_name: str = "nightly"
    work_pool: str = "lmforge-process"

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {value!r} (use an IANA name such as Europe/Berlin)") from exc
        return value
