"""Typed repository functions over the metadata ORM.

Every function takes the caller's ``Session`` and never commits: the caller's
``MetadataStore.session()`` block is the transaction, so a change of several rows lands whole or not at all.
"""

from __future__ import annotations

import math
import socket
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, selectinload

from lmforge_core.metadata.models import (
    AliasEvent,
    BatchRejectCount,
    BatchStatus,
    Checkpoint,
    DataBatch,
    DatasetLineage,
    DatasetVersion,
    Deployment,
    Evaluation,
    ExpectationResult,
    ModelAlias,
    ModelStatus,
    ModelVersion,
    Review,
    ReviewDecision,
    RunStatus,
    SourceShard,
    StepMetric,
    TokenizerVersion,
    TrainingRun,
    Validation,
    utcnow,
)

PRODUCTION = "production"


class NotFoundError(LookupError):
    """A requested record does not exist; the message names it."""


# --- source shards and batches ---------------------------------------------------------------


def find_shard(session: Session, sha256: str) -> SourceShard | None:
    return session.scalar(select(SourceShard).where(SourceShard.sha256 == sha256))


def add_shard(
    session: Session,
    *,
    uri: str,
    sha256: str,
    size_bytes: int,
    batch_id: int | None,
    records_read: int = 0,
    records_accepted: int = 0,
    records_rejected: int = 0,
    error: str | None = None,
) -> SourceShard:
    shard = SourceShard(
        uri=uri,
        sha256=sha256,
        size_bytes=size_bytes,
        batch_id=batch_id,
        records_read=records_read,
        records_accepted=records_accepted,
        records_rejected=records_rejected,
        error=error,
    )
    session.add(shard)
    session.flush()
    return shard


def move_shard(
    session: Session,
    shard: SourceShard,
    *,
    uri: str,
    size_bytes: int,
    batch_id: int,
    records_read: int,
    records_accepted: int,
    error: str | None,
) -> SourceShard:
    """Re-record a shard under the batch that re-ran it (a retry), so it counts in exactly one batch."""
    shard.uri, shard.size_bytes, shard.batch_id, shard.error = uri, size_bytes, batch_id, error
    shard.records_read, shard.records_accepted = records_read, records_accepted
    shard.records_rejected = records_read - records_accepted
    session.flush()
    return shard


def add_batch_stats(session: Session, batch_id: int, **stats: Any) -> DataBatch:
    """Merge entries into a batch's stats (e.g. ``retried_by`` on a batch that a retry re-ran)."""
    batch = get_batch(session, batch_id)
    batch.stats = {**(batch.stats or {}), **stats}
    session.flush()
    return batch


def create_batch(session: Session, source_uri: str) -> DataBatch:
    batch = DataBatch(source_uri=source_uri, status=BatchStatus.RUNNING, stats={})
    session.add(batch)
    session.flush()
    return batch


def get_batch(session: Session, batch_id: int) -> DataBatch:
    batch = session.get(DataBatch, batch_id, options=[selectinload(DataBatch.rejects)])
    if batch is None:
        raise NotFoundError(f"data batch {batch_id} does not exist")
    return batch


def finish_batch(
    session: Session,
    batch_id: int,
    *,
    status: BatchStatus,
    records_read: int,
    records_accepted: int,
    rejects: Mapping[str, int],
    quarantine_key: str | None = None,
    stats: Mapping[str, Any] | None = None,
) -> DataBatch:
    """Close a batch with its counts; refuses counts that do not add up (nothing may be lost)."""
    if any(count < 0 for count in rejects.values()) or records_accepted < 0:
        raise ValueError(f"batch {batch_id}: record counts cannot be negative ({dict(rejects)})")
    rejected = sum(rejects.values())
    if records_accepted + rejected != records_read:
        raise ValueError(
            f"batch {batch_id}: accepted {records_accepted} + rejected {rejected} != read {records_read}"
        )
    batch = get_batch(session, batch_id)
    batch.status = status
    batch.records_read = records_read
    batch.records_accepted = records_accepted
    batch.records_rejected = rejected
    batch.quarantine_key = quarantine_key
    batch.stats = dict(stats or {})
    batch.finished_at = utcnow()
    batch.rejects = [BatchRejectCount(reason=reason, count=count) for reason, count in sorted(rejects.items()) if count]
    session.flush()
    return batch


def list_batches(session: Session, limit: int = 20) -> list[DataBatch]:
    stmt = select(DataBatch).options(selectinload(DataBatch.rejects)).order_by(DataBatch.id.desc()).limit(limit)
    return list(session.scalars(stmt))


def previous_accepted_batch(session: Session, before_batch_id: int) -> DataBatch | None:
    stmt = (
        select(DataBatch)
        .where(DataBatch.status == BatchStatus.ACCEPTED, DataBatch.id < before_batch_id)
        .order_by(DataBatch.id.desc())
        .limit(1)
    )
    return session.scalar(stmt)


# --- data-quality validations ----------------------------------------------------------------


def record_validation(
    session: Session,
    *,
    batch_id: int,
    suite_name: str,
    success: bool,
    results: Iterable[Mapping[str, Any]],
    report_key: str | None = None,
    statistics: Mapping[str, Any] | None = None,
) -> Validation:
    """Record a validation with one row per expectation.

    Each result mapping has ``expectation_type``, ``success`` and optionally ``column``,
    ``observed_value`` (any JSON value) and ``kwargs``.
    """
    validation = Validation(
        batch_id=batch_id,
        suite_name=suite_name,
        success=success,
        report_key=report_key,
        statistics=dict(statistics or {}),
        results=[
            ExpectationResult(
                expectation_type=str(item["expectation_type"]),
                column=item.get("column"),
                success=bool(item["success"]),
                observed_value={"value": item.get("observed_value")},
                kwargs=dict(item.get("kwargs") or {}),
            )
            for item in results
        ],
    )
    session.add(validation)
    session.flush()
    return validation


def latest_validation(session: Session) -> Validation | None:
    stmt = select(Validation).options(selectinload(Validation.results)).order_by(Validation.id.desc()).limit(1)
    return session.scalar(stmt)


def validations_for_batch(session: Session, batch_id: int) -> list[Validation]:
    stmt = select(Validation).where(Validation.batch_id == batch_id).options(selectinload(Validation.results))
    return list(session.scalars(stmt.order_by(Validation.id)))


# --- tokenizers and dataset versions ---------------------------------------------------------


def add_tokenizer_version(
    session: Session,
    *,
    version: str,
    artifact_key: str,
    sha256: str,
    vocab_size: int,
    trained_on: Mapping[str, Any] | None = None,
) -> TokenizerVersion:
    tokenizer = TokenizerVersion(
        version=version, artifact_key=artifact_key, sha256=sha256, vocab_size=vocab_size, trained_on=dict(trained_on or {})
    )
    session.add(tokenizer)
    session.flush()
    return tokenizer


def latest_tokenizer_version(session: Session, *, without: str | None = None) -> TokenizerVersion | None:
    """The newest tokenizer version; with ``without``, the newest whose ``trained_on`` lacks that key."""
    for tokenizer in session.scalars(select(TokenizerVersion).order_by(TokenizerVersion.id.desc())):
        if without is None or without not in (tokenizer.trained_on or {}):
            return tokenizer
    return None


def get_tokenizer_version(session: Session, version: str) -> TokenizerVersion:
    found = session.scalar(select(TokenizerVersion).where(TokenizerVersion.version == version))
    if found is None:
        raise NotFoundError(f"tokenizer version {version!r} does not exist")
    return found


def find_tokenizer_version(session: Session, sha256: str) -> TokenizerVersion | None:
    """The tokenizer version whose file has this sha256 (the first recorded), if any."""
    return session.scalar(select(TokenizerVersion).where(TokenizerVersion.sha256 == sha256)
                          .order_by(TokenizerVersion.id).limit(1))


def next_sequence_label(session: Session, model: type[DatasetVersion] | type[TokenizerVersion], prefix: str) -> str:
    """Next human-readable id such as ``ds-000003``: one past the highest ever used (the unique
    constraint on ``version`` guards against two writers taking the same one)."""
    highest = 0
    for label in session.scalars(select(model.version).where(model.version.like(f"{prefix}-%"))):
        suffix = label[len(prefix) + 1 :]
        if suffix.isdigit():
            highest = max(highest, int(suffix))
    return f"{prefix}-{highest + 1:06d}"


def _finite(value: float, what: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{what} is {number}; only finite values are recorded (log the event instead)")
    return number


def create_dataset_version(
    session: Session,
    *,
    version: str,
    manifest_key: str,
    manifest_sha256: str,
    tokenizer_id: int | None,
    train_tokens: int,
    validation_tokens: int,
    documents: int,
    batch_ids: Sequence[int],
) -> DatasetVersion:
    dataset = DatasetVersion(
        version=version,
        manifest_key=manifest_key,
        manifest_sha256=manifest_sha256,
        tokenizer_id=tokenizer_id,
        train_tokens=train_tokens,
        validation_tokens=validation_tokens,
        documents=documents,
        lineage=[DatasetLineage(batch_id=batch_id) for batch_id in sorted(set(batch_ids))],
    )
    session.add(dataset)
    session.flush()
    return dataset


def get_dataset_version(session: Session, version: str) -> DatasetVersion:
    stmt = select(DatasetVersion).where(DatasetVersion.version == version).options(selectinload(DatasetVersion.lineage))
    dataset = session.scalar(stmt)
    if dataset is None:
        raise NotFoundError(f"dataset version {version!r} does not exist; `lmforge datasets` lists them")
    return dataset


DERIVED = "."  # ``ds-000003.tok-000002``: the documents of ds-000003 tokenized by tok-000002


def derived_dataset_label(version: str, tokenizer_version: str) -> str:
    """The label of ``version``'s documents tokenized by another tokenizer (a derived dataset version)."""
    return f"{version.split(DERIVED, 1)[0]}{DERIVED}{tokenizer_version}"


def is_derived_dataset(version: str) -> bool:
    return DERIVED in version


def find_dataset_version(session: Session, version: str) -> DatasetVersion | None:
    return session.scalar(select(DatasetVersion).where(DatasetVersion.version == version))


def list_dataset_versions(session: Session) -> list[DatasetVersion]:
    stmt = select(DatasetVersion).options(selectinload(DatasetVersion.lineage), selectinload(DatasetVersion.tokenizer))
    return list(session.scalars(stmt.order_by(DatasetVersion.id)))


def latest_dataset_version(session: Session) -> DatasetVersion | None:
    """The newest ingested dataset version (derived versions re-tokenize one; they are not new data)."""
    stmt = select(DatasetVersion).where(DatasetVersion.version.not_like(f"%{DERIVED}%"))
    return session.scalar(stmt.order_by(DatasetVersion.id.desc()).limit(1))


# --- training runs, metrics, checkpoints -----------------------------------------------------


def create_run(
    session: Session,
    *,
    config: Mapping[str, Any],
    dataset_version_id: int | None = None,
    base_model_version_id: int | None = None,
    resumed_from_id: int | None = None,
    run_id: str | None = None,
    host: str | None = None,
) -> TrainingRun:
    run = TrainingRun(
        run_id=run_id or f"run-{uuid.uuid4().hex[:12]}",
        config=dict(config),
        status=RunStatus.RUNNING,
        host=host or socket.gethostname(),
        dataset_version_id=dataset_version_id,
        base_model_version_id=base_model_version_id,
        resumed_from_id=resumed_from_id,
        summary={},
    )
    session.add(run)
    session.flush()
    return run


def get_run(session: Session, run_id: str) -> TrainingRun:
    run = session.scalar(select(TrainingRun).where(TrainingRun.run_id == run_id))
    if run is None:
        raise NotFoundError(f"training run {run_id!r} does not exist; `lmforge status` lists recent runs")
    return run


def finish_run(
    session: Session,
    run_id: str,
    *,
    status: RunStatus,
    error: str | None = None,
    summary: Mapping[str, Any] | None = None,
) -> TrainingRun:
    run = get_run(session, run_id)
    run.status = status
    run.error = error
    run.ended_at = utcnow()
    if summary is not None:
        run.summary = dict(summary)
    session.flush()
    return run


def list_runs(session: Session, limit: int = 10) -> list[TrainingRun]:
    return list(session.scalars(select(TrainingRun).order_by(TrainingRun.id.desc()).limit(limit)))


def add_step_metrics(session: Session, run_pk: int, rows: Iterable[tuple[int, str, float]]) -> int:
    """Record (step, name, value) rows of a run in the caller's transaction; re-recording a step replaces it.

    Non-finite values are refused with a ValueError: a NaN loss is a spike event, not a metric.
    """
    count = 0
    for step, name, value in rows:
        number = _finite(value, f"metric {name!r} at step {step}")
        session.merge(StepMetric(run_id=run_pk, step=step, name=name, value=number))
        count += 1
    session.flush()
    return count


def step_metrics(session: Session, run_pk: int, name: str | None = None) -> list[StepMetric]:
    stmt = select(StepMetric).where(StepMetric.run_id == run_pk)
    if name is not None:
        stmt = stmt.where(StepMetric.name == name)
    return list(session.scalars(stmt.order_by(StepMetric.step, StepMetric.name)))


def add_checkpoint(session: Session, *, run_pk: int, step: int, artifact_key: str, sha256: str) -> Checkpoint:
    checkpoint = Checkpoint(run_id=run_pk, step=step, artifact_key=artifact_key, sha256=sha256)
    session.add(checkpoint)
    session.flush()
    return checkpoint


def latest_checkpoint(session: Session, run_pk: int) -> Checkpoint | None:
    stmt = select(Checkpoint).where(Checkpoint.run_id == run_pk).order_by(Checkpoint.step.desc()).limit(1)
    return session.scalar(stmt)


def list_checkpoints(session: Session, run_pk: int) -> list[Checkpoint]:
    return list(session.scalars(select(Checkpoint).where(Checkpoint.run_id == run_pk).order_by(Checkpoint.step)))


# --- model versions and aliases --------------------------------------------------------------


def register_model_version(
    session: Session,
    *,
    name: str,
    training_run_pk: int | None,
    parent_id: int | None,
    artifacts: Mapping[str, Any],
    status: ModelStatus = ModelStatus.CANDIDATE,
) -> ModelVersion:
    """Create the next version number of ``name`` (1, 2, ...)."""
    last = session.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.name == name)) or 0
    version = ModelVersion(
        name=name,
        version=last + 1,
        parent_id=parent_id,
        training_run_id=training_run_pk,
        artifacts=dict(artifacts),
        status=status,
    )
    session.add(version)
    session.flush()
    return version


def get_model_version(session: Session, name: str, version: int) -> ModelVersion:
    found = session.scalar(select(ModelVersion).where(ModelVersion.name == name, ModelVersion.version == version))
    if found is None:
        raise NotFoundError(f"model version {name}:v{version} does not exist")
    return found


MAX_MODEL_VERSION = 2**31 - 1  # the column is a 32-bit integer on every backend


def version_number(ref: str) -> int | None:
    """The number of a version reference (``3``, ``v3``), None when ``ref`` is not one (an alias name).

    Only ASCII digits make a number (``v²`` and ``v٣`` are not, though ``str.isdigit`` says so); a number past
    :data:`MAX_MODEL_VERSION` names no version and is refused here, not by the database driver."""
    text_ref = ref.strip()
    digits = text_ref[1:] if text_ref[:1] in ("v", "V") else text_ref
    if not (digits.isascii() and digits.isdigit()):
        return None
    number = int(digits)
    if number > MAX_MODEL_VERSION:
        raise NotFoundError(f"model version {ref.strip()[:40]!r} is out of range: version numbers go up to "
                            f"{MAX_MODEL_VERSION}")
    return number


def resolve_model_version(session: Session, name: str, ref: str) -> ModelVersion:
    """``ref`` is a version number (``3`` or ``v3``) or an alias (``production``)."""
    text_ref = ref.strip()
    number = version_number(text_ref)
    if number is not None:
        return get_model_version(session, name, number)
    version = get_alias(session, name, text_ref)
    if version is None:
        raise NotFoundError(f"model {name!r} has no version {ref!r} and no alias of that name")
    return version


def list_model_versions(session: Session, name: str) -> list[ModelVersion]:
    return list(session.scalars(select(ModelVersion).where(ModelVersion.name == name).order_by(ModelVersion.version)))


def set_model_status(session: Session, model_version_id: int, status: ModelStatus) -> ModelVersion:
    version = session.get(ModelVersion, model_version_id)
    if version is None:
        raise NotFoundError(f"model version id {model_version_id} does not exist")
    version.status = status
    session.flush()
    return version


def get_alias(session: Session, name: str, alias: str) -> ModelVersion | None:
    row = session.get(ModelAlias, (name, alias))
    return row.model_version if row is not None else None


def _lock_alias(session: Session, name: str, alias: str) -> ModelAlias | None:
    """Read the alias row so that a concurrent move waits for this transaction.

    PostgreSQL: ``SELECT ... FOR UPDATE``. SQLite: a no-op write first takes the database's write lock
    (pysqlite begins transactions lazily, so a plain read would not).
    """
    if session.get_bind().dialect.name == "sqlite":
        session.execute(
            update(ModelAlias)
            .where(ModelAlias.name == name, ModelAlias.alias == alias)
            .values(updated_at=ModelAlias.updated_at)
        )
        return session.get(ModelAlias, (name, alias), populate_existing=True)
    return session.get(ModelAlias, (name, alias), with_for_update=True, populate_existing=True)


def set_alias(
    session: Session,
    *,
    name: str,
    alias: str,
    model_version_id: int | None,
    actor: str = "system",
    reason: str = "",
    is_rollback: bool = False,
    at: datetime | None = None,
) -> AliasEvent | None:
    """Point ``alias`` at a version of model ``name`` (or remove it with ``None``), appending the move to
    the history. Pointing it where it already points changes nothing and records nothing (None).

    The ``production`` alias also keeps :class:`ModelStatus` in step: the new target becomes
    ``production``, the one it replaces ``archived``.
    """
    if model_version_id is not None:
        target = session.get(ModelVersion, model_version_id)
        if target is None or target.name != name:
            raise NotFoundError(f"model {name!r} has no version with id {model_version_id}")
    row = _lock_alias(session, name, alias)
    previous = row.model_version_id if row is not None else None
    if previous == model_version_id:
        return None
    now = at or utcnow()
    if model_version_id is None:
        if row is not None:
            session.delete(row)
    elif row is None:
        session.add(ModelAlias(name=name, alias=alias, model_version_id=model_version_id, updated_at=now))
    else:
        row.model_version_id = model_version_id
        row.updated_at = now
    if alias == PRODUCTION:
        if previous is not None:
            set_model_status(session, previous, ModelStatus.ARCHIVED)
        if model_version_id is not None:
            set_model_status(session, model_version_id, ModelStatus.PRODUCTION)
    event = AliasEvent(
        name=name,
        alias=alias,
        model_version_id=model_version_id,
        previous_version_id=previous,
        changed_at=now,
        actor=actor,
        reason=reason,
        is_rollback=is_rollback,
    )
    session.add(event)
    session.flush()
    return event


def alias_history(session: Session, name: str, alias: str) -> list[AliasEvent]:
    stmt = select(AliasEvent).where(AliasEvent.name == name, AliasEvent.alias == alias)
    return list(session.scalars(stmt.order_by(AliasEvent.changed_at, AliasEvent.id)))


def alias_target_at(session: Session, name: str, alias: str, when: datetime) -> ModelVersion | None:
    """What the alias pointed at at ``when`` ("what served when"), from the append-only history."""
    stmt = (
        select(AliasEvent)
        .where(AliasEvent.name == name, AliasEvent.alias == alias, AliasEvent.changed_at <= when)
        .order_by(AliasEvent.changed_at.desc(), AliasEvent.id.desc())
        .limit(1)
    )
    event = session.scalar(stmt)
    return event.model_version if event is not None else None


def rollback_alias(session: Session, *, name: str, alias: str, actor: str, reason: str = "") -> AliasEvent:
    """Point ``alias`` back at the version it held before the current one was promoted.

    Repeated rollbacks walk further back (v3 -> v2 -> v1), because a rollback's target is taken from
    the event that *promoted* the current version, never from an earlier rollback.
    """
    row = session.get(ModelAlias, (name, alias))
    if row is None:
        raise NotFoundError(f"model {name!r} has no {alias!r} alias to roll back")
    stmt = (
        select(AliasEvent)
        .where(
            AliasEvent.name == name,
            AliasEvent.alias == alias,
            AliasEvent.model_version_id == row.model_version_id,
            AliasEvent.is_rollback.is_(False),
            AliasEvent.previous_version_id.is_not(None),
        )
        .order_by(AliasEvent.id.desc())
        .limit(1)
    )
    current_event = session.scalar(stmt)
    target = current_event.previous_version_id if current_event is not None else None
    if target is None:
        raise NotFoundError(f"{name}@{alias} has no earlier version to roll back to")
    event = set_alias(
        session,
        name=name,
        alias=alias,
        model_version_id=target,
        actor=actor,
        reason=reason or "rollback",
        is_rollback=True,
    )
    assert event is not None  # target differs from the current version by construction
    return event


# --- evaluations, reviews, deployments -------------------------------------------------------


def add_evaluation(
    session: Session,
    *,
    model_version_id: int,
    dataset: str,
    metric: str,
    value: float,
    slice_name: str = "all",
    details: Mapping[str, Any] | None = None,
) -> Evaluation:
    evaluation = Evaluation(
        model_version_id=model_version_id,
        dataset=dataset,
        metric=metric,
        slice=slice_name,
        value=_finite(value, f"evaluation {metric!r} on {dataset!r}"),
        details=dict(details or {}),
    )
    session.add(evaluation)
    session.flush()
    return evaluation


def evaluations_for(session: Session, model_version_id: int) -> list[Evaluation]:
    stmt = select(Evaluation).where(Evaluation.model_version_id == model_version_id)
    return list(session.scalars(stmt.order_by(Evaluation.dataset, Evaluation.metric, Evaluation.slice)))


def add_review(
    session: Session, *, model_version_id: int, reviewer: str, decision: ReviewDecision, comment: str = ""
) -> Review:
    if not reviewer.strip():
        raise ValueError("a review needs the reviewer's name")
    review = Review(model_version_id=model_version_id, reviewer=reviewer, decision=decision, comment=comment)
    session.add(review)
    session.flush()
    return review


def reviews_for(session: Session, model_version_id: int) -> list[Review]:
    stmt = select(Review).where(Review.model_version_id == model_version_id).order_by(Review.created_at, Review.id)
    return list(session.scalars(stmt))


def add_deployment(
    session: Session, *, model_version_id: int, repository_uri: str, triton_model_name: str, triton_version: int
) -> Deployment:
    deployment = Deployment(
        model_version_id=model_version_id,
        repository_uri=repository_uri,
        triton_model_name=triton_model_name,
        triton_version=triton_version,
    )
    session.add(deployment)
    session.flush()
    return deployment


def list_deployments(session: Session, limit: int = 20) -> list[Deployment]:
    return list(session.scalars(select(Deployment).order_by(Deployment.id.desc()).limit(limit)))
