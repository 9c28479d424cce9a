"""ORM of the metadata store: one class per recorded thing of the lifecycle.

Times are timezone-aware UTC. JSON columns hold configs and observed values as recorded.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite returns naive values otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to the metadata store; use datetime.now(UTC)")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, datetime: UTCDateTime()}


class BatchStatus(enum.StrEnum):
    RUNNING = "running"
    ACCEPTED = "accepted"
    QUARANTINED = "quarantined"
    FAILED = "failed"
    EMPTY = "empty"


class RunStatus(enum.StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class ModelStatus(enum.StrEnum):
    CANDIDATE = "candidate"
    APPROVED = "approved"
    REJECTED = "rejected"
    PRODUCTION = "production"
    ARCHIVED = "archived"


class ReviewDecision(enum.StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    ROLLBACK = "rollback"


def _enum(kind: type[enum.Enum], name: str) -> Enum:
    return Enum(kind, name=name, native_enum=False, length=20, values_callable=lambda e: [m.value for m in e])


class DataBatch(Base):
    """One ingestion of a source: what was read, accepted and rejected (per reason)."""

    __tablename__ = "data_batches"
    id: Mapped[int] = mapped_column(primary_key=True)
    source_uri: Mapped[str] = mapped_column(String(1024))
    status: Mapped[BatchStatus] = mapped_column(_enum(BatchStatus, "batch_status"), default=BatchStatus.RUNNING)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    records_read: Mapped[int] = mapped_column(Integer, default=0)
    records_accepted: Mapped[int] = mapped_column(Integer, default=0)
    records_rejected: Mapped[int] = mapped_column(Integer, default=0)
    quarantine_key: Mapped[str | None] = mapped_column(String(1024))
    stats: Mapped[dict[str, Any]] = mapped_column(default=dict)
    rejects: Mapped[list[BatchRejectCount]] = relationship(
        back_populates="batch", cascade="all, delete-orphan", order_by="BatchRejectCount.reason"
    )
    shards: Mapped[list[SourceShard]] = relationship(back_populates="batch")


class BatchRejectCount(Base):
    __tablename__ = "batch_reject_counts"
    batch_id: Mapped[int] = mapped_column(ForeignKey("data_batches.id", ondelete="CASCADE"), primary_key=True)
    reason: Mapped[str] = mapped_column(String(128), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
    batch: Mapped[DataBatch] = relationship(back_populates="rejects")


class SourceShard(Base):
    """A source file ingested once, keyed by the sha256 of its bytes."""

    __tablename__ = "source_shards"
    id: Mapped[int] = mapped_column(primary_key=True)
    uri: Mapped[str] = mapped_column(String(2048))
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    ingested_at: Mapped[datetime] = mapped_column(default=utcnow)
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("data_batches.id"), index=True)
    records_read: Mapped[int] = mapped_column(Integer, default=0)
    records_accepted: Mapped[int] = mapped_column(Integer, default=0)
    records_rejected: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    batch: Mapped[DataBatch | None] = relationship(back_populates="shards")


class Validation(Base):
    """A data-quality validation of a batch (Great Expectations suite run)."""

    __tablename__ = "validations"
    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("data_batches.id"), index=True)
    suite_name: Mapped[str] = mapped_column(String(256))
    success: Mapped[bool] = mapped_column(Boolean)
    run_at: Mapped[datetime] = mapped_column(default=utcnow)
    report_key: Mapped[str | None] = mapped_column(String(1024))
    statistics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    results: Mapped[list[ExpectationResult]] = relationship(
        back_populates="validation", cascade="all, delete-orphan", order_by="ExpectationResult.id"
    )


class ExpectationResult(Base):
    __tablename__ = "expectation_results"
    id: Mapped[int] = mapped_column(primary_key=True)
    validation_id: Mapped[int] = mapped_column(ForeignKey("validations.id", ondelete="CASCADE"), index=True)
    expectation_type: Mapped[str] = mapped_column(String(256))
    column: Mapped[str | None] = mapped_column(String(256))
    success: Mapped[bool] = mapped_column(Boolean)
    observed_value: Mapped[dict[str, Any]] = mapped_column(default=dict)
    kwargs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    validation: Mapped[Validation] = relationship(back_populates="results")


class TokenizerVersion(Base):
    __tablename__ = "tokenizer_versions"
    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[str] = mapped_column(String(64), unique=True)
    artifact_key: Mapped[str] = mapped_column(String(1024))
    sha256: Mapped[str] = mapped_column(String(64))
    vocab_size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    trained_on: Mapped[dict[str, Any]] = mapped_column(default=dict)


class DatasetVersion(Base):
    """An immutable tokenized dataset: manifest artifact, token counts, lineage to batches."""

    __tablename__ = "dataset_versions"
    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[str] = mapped_column(String(64), unique=True)
    manifest_key: Mapped[str] = mapped_column(String(1024))
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    tokenizer_id: Mapped[int | None] = mapped_column(ForeignKey("tokenizer_versions.id"))
    train_tokens: Mapped[int] = mapped_column(BigInteger)
    validation_tokens: Mapped[int] = mapped_column(BigInteger)
    documents: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    tokenizer: Mapped[TokenizerVersion | None] = relationship()
    lineage: Mapped[list[DatasetLineage]] = relationship(
        back_populates="dataset_version", cascade="all, delete-orphan"
    )


class DatasetLineage(Base):
    __tablename__ = "dataset_lineage"
    dataset_version_id: Mapped[int] = mapped_column(
        ForeignKey("dataset_versions.id", ondelete="CASCADE"), primary_key=True
    )
    batch_id: Mapped[int] = mapped_column(ForeignKey("data_batches.id"), primary_key=True)
    dataset_version: Mapped[DatasetVersion] = relationship(back_populates="lineage")
    batch: Mapped[DataBatch] = relationship()


class TrainingRun(Base):
    __tablename__ = "training_runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(String(64), unique=True)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[RunStatus] = mapped_column(_enum(RunStatus, "run_status"), default=RunStatus.RUNNING)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None]
    host: Mapped[str] = mapped_column(String(256), default="")
    dataset_version_id: Mapped[int | None] = mapped_column(ForeignKey("dataset_versions.id"))
    base_model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id", use_alter=True))
    resumed_from_id: Mapped[int | None] = mapped_column(ForeignKey("training_runs.id"))
    error: Mapped[str | None] = mapped_column(Text)
    summary: Mapped[dict[str, Any]] = mapped_column(default=dict)
    dataset_version: Mapped[DatasetVersion | None] = relationship()
    resumed_from: Mapped[TrainingRun | None] = relationship(remote_side=[id])


class StepMetric(Base):
    __tablename__ = "step_metrics"
    run_id: Mapped[int] = mapped_column(ForeignKey("training_runs.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[float] = mapped_column(Float)


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("training_runs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    artifact_key: Mapped[str] = mapped_column(String(1024))
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    __table_args__ = (UniqueConstraint("run_id", "step", name="uq_checkpoints_run_step"),)


class ModelVersion(Base):
    __tablename__ = "model_versions"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    training_run_id: Mapped[int | None] = mapped_column(ForeignKey("training_runs.id"))
    artifacts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[ModelStatus] = mapped_column(_enum(ModelStatus, "model_status"), default=ModelStatus.CANDIDATE)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    parent: Mapped[ModelVersion | None] = relationship(remote_side=[id])
    training_run: Mapped[TrainingRun | None] = relationship(foreign_keys=[training_run_id])
    __table_args__ = (UniqueConstraint("name", "version", name="uq_model_versions_name_version"),)

    @property
    def label(self) -> str:
        return f"{self.name}:v{self.version}"


class ModelAlias(Base):
    """Where an alias (``production``, ``candidate``...) points now; history is in AliasEvent."""

    __tablename__ = "model_aliases"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    model_version: Mapped[ModelVersion] = relationship()


class AliasEvent(Base):
    """History of alias moves: answers 'what served when' and 'previous production'.

    Append-only by contract: the repository only ever inserts rows here.
    """

    __tablename__ = "alias_events"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    alias: Mapped[str] = mapped_column(String(64))
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    previous_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(128), default="system")
    reason: Mapped[str] = mapped_column(Text, default="")
    is_rollback: Mapped[bool] = mapped_column(Boolean, default=False)
    model_version: Mapped[ModelVersion | None] = relationship(foreign_keys=[model_version_id])
    __table_args__ = (Index("ix_alias_events_name_alias_changed", "name", "alias", "changed_at"),)


class Evaluation(Base):
    __tablename__ = "evaluations"
    id: Mapped[int] = mapped_column(primary_key=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), index=True)
    dataset: Mapped[str] = mapped_column(String(256))
    metric: Mapped[str] = mapped_column(String(128))
    slice: Mapped[str] = mapped_column(String(256), default="all")
    value: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Review(Base):
    __tablename__ = "reviews"
    id: Mapped[int] = mapped_column(primary_key=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), index=True)
    reviewer: Mapped[str] = mapped_column(String(128))
    decision: Mapped[ReviewDecision] = mapped_column(_enum(ReviewDecision, "review_decision"))
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Deployment(Base):
    __tablename__ = "deployments"
    id: Mapped[int] = mapped_column(primary_key=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), index=True)
    repository_uri: Mapped[str] = mapped_column(String(1024))
    triton_model_name: Mapped[str] = mapped_column(String(128))
    triton_version: Mapped[int] = mapped_column(Integer)
    deployed_at: Mapped[datetime] = mapped_column(default=utcnow)


class GateVerdict(enum.StrEnum):
    PROMOTE = "promote"
    NEEDS_REVIEW = "needs_review"
    REJECT = "reject"


class ReviewRequestStatus(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    TIMED_OUT = "timed_out"


class GateDecision(Base):
    """The promotion gate's decision on a model version: the verdict and every check behind it.

    ``checks`` is a list of ``{"name", "metric", "value", "bound", "kind", "passed", "verdict", "detail"}``
    dicts, in the order the gate table shows them. The newest decision of a model version is the one in force.
    """

    __tablename__ = "gate_decisions"
    id: Mapped[int] = mapped_column(primary_key=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), index=True)
    verdict: Mapped[GateVerdict] = mapped_column(_enum(GateVerdict, "gate_verdict"))
    baseline_model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    checks: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    report_key: Mapped[str | None] = mapped_column(String(1024))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ReviewRequest(Base):
    """A human review the pipeline is waiting for; ``flow_run_id`` names the paused/suspended Prefect run
    to resume when the review is given (empty when no flow waits, e.g. a review asked from the CLI)."""

    __tablename__ = "review_requests"
    id: Mapped[int] = mapped_column(primary_key=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), index=True)
    status: Mapped[ReviewRequestStatus] = mapped_column(
        _enum(ReviewRequestStatus, "review_request_status"), default=ReviewRequestStatus.PENDING
    )
    flow_run_id: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text, default="")
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    deadline: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    review_id: Mapped[int | None] = mapped_column(ForeignKey("reviews.id"))


class AuditEvent(Base):
    """Who did what to which thing, append-only: review decisions, promotions, rollbacks, logins refused."""

    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(256), default="")
    source: Mapped[str] = mapped_column(String(32), default="cli")
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


class DocumentRemoval(Base):
    """Why one record of a batch was removed (rejected at ingest), so a reader can see it without the quarantine.

    A duplicate names its twin (the earlier document: batch, shard, position, id) and the estimated Jaccard
    similarity (1.0 for an exact duplicate; `containment` when the share of it inside the twin decided); a filtered document names the rule, its score and the bound it
    crossed (`bound_min`/`bound_max`, None where open); a malformed record its `detail`.
    The twin's batch is not a foreign key: the twin may come from a snapshot written before batches were kept.
    """

    __tablename__ = "document_removals"
    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("data_batches.id", ondelete="CASCADE"), index=True)
    shard: Mapped[str] = mapped_column(String(1024))
    position: Mapped[int] = mapped_column(Integer)
    doc_id: Mapped[str | None] = mapped_column(String(1024))
    reason: Mapped[str] = mapped_column(String(128))
    detail: Mapped[str | None] = mapped_column(Text)
    rule: Mapped[str | None] = mapped_column(String(128))
    score: Mapped[float | None] = mapped_column(Float)
    bound_min: Mapped[float | None] = mapped_column(Float)
    bound_max: Mapped[float | None] = mapped_column(Float)
    twin_batch_id: Mapped[int | None] = mapped_column(Integer, index=True)
    twin_shard: Mapped[str | None] = mapped_column(String(1024))
    twin_position: Mapped[int | None] = mapped_column(Integer)
    twin_doc_id: Mapped[str | None] = mapped_column(String(1024))
    similarity: Mapped[float | None] = mapped_column(Float)
    containment: Mapped[float | None] = mapped_column(Float)  # share of it inside its twin (when that decided)
