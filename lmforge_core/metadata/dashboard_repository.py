"""Read functions of the review dashboard: bounded queries returning plain dicts (cacheable, picklable).

Same contract as :mod:`lmforge_core.metadata.repository` (the caller's session, never a commit). Every
function takes a ``limit``; long series are thinned in SQL (every n-th step) so a page never loads an
unbounded number of rows, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from lmforge_core.metadata.models import (
    AliasEvent,
    AuditEvent,
    BatchRejectCount,
    Checkpoint,
    DataBatch,
    DatasetVersion,
    Evaluation,
    ExpectationResult,
    GateDecision,
    ModelAlias,
    ModelStatus,
    ModelVersion,
    Review,
    ReviewRequest,
    ReviewRequestStatus,
    RunStatus,
    StepMetric,
    TrainingRun,
    Validation,
)


def _rows(session: Session, stmt: Any) -> list[dict[str, Any]]:
    return [dict(row) for row in session.execute(stmt).mappings()]


# --- runs and batches ------------------------------------------------------------------------


def recent_runs(session: Session, limit: int) -> list[dict[str, Any]]:
    """Newest training runs first, without their config (overview and run pickers)."""
    stmt = (select(TrainingRun.id, TrainingRun.run_id, TrainingRun.status, TrainingRun.started_at,
                   TrainingRun.ended_at, TrainingRun.resumed_from_id, TrainingRun.error,
                   DatasetVersion.version.label("dataset"))
            .outerjoin(DatasetVersion, DatasetVersion.id == TrainingRun.dataset_version_id)
            .order_by(TrainingRun.id.desc()).limit(limit))
    return _rows(session, stmt)


def run_summaries(session: Session, run_pks: Sequence[int]) -> dict[int, dict[str, Any]]:
    """``summary`` of the given runs (incidents: spikes and rollbacks, checkpoints)."""
    stmt = select(TrainingRun.id, TrainingRun.summary).where(TrainingRun.id.in_(list(run_pks)))
    return {row.id: dict(row.summary or {}) for row in session.execute(stmt)}


def recent_batches(session: Session, limit: int, with_stats: bool = False) -> list[dict[str, Any]]:
    """Newest data batches first; ``stats`` (histograms, figures, PII) only when asked for."""
    columns = [DataBatch.id, DataBatch.source_uri, DataBatch.status, DataBatch.started_at, DataBatch.finished_at,
               DataBatch.records_read, DataBatch.records_accepted, DataBatch.records_rejected,
               DataBatch.quarantine_key]
    if with_stats:
        columns.append(DataBatch.stats)
    return _rows(session, select(*columns).order_by(DataBatch.id.desc()).limit(limit))


def reject_counts(session: Session, batch_ids: Sequence[int]) -> list[dict[str, Any]]:
    stmt = (select(BatchRejectCount.batch_id, BatchRejectCount.reason, BatchRejectCount.count)
            .where(BatchRejectCount.batch_id.in_(list(batch_ids))))
    return _rows(session, stmt)


def failed_runs(session: Session, limit: int) -> list[dict[str, Any]]:
    stmt = (select(TrainingRun.run_id, TrainingRun.started_at, TrainingRun.error)
            .where(TrainingRun.status == RunStatus.FAILED).order_by(TrainingRun.id.desc()).limit(limit))
    return _rows(session, stmt)


# --- data quality ----------------------------------------------------------------------------


def recent_validations(session: Session, limit: int) -> list[dict[str, Any]]:
    stmt = (select(Validation.id, Validation.batch_id, Validation.suite_name, Validation.success, Validation.run_at,
                   Validation.report_key)
            .order_by(Validation.id.desc()).limit(limit))
    return _rows(session, stmt)


def expectation_results(session: Session, validation_ids: Sequence[int], limit: int) -> list[dict[str, Any]]:
    stmt = (select(ExpectationResult.validation_id, ExpectationResult.expectation_type, ExpectationResult.column,
                   ExpectationResult.success, ExpectationResult.observed_value, ExpectationResult.kwargs)
            .where(ExpectationResult.validation_id.in_(list(validation_ids)))
            .order_by(ExpectationResult.validation_id.desc(), ExpectationResult.id).limit(limit))
    return _rows(session, stmt)


# --- training metrics ------------------------------------------------------------------------


def metric_series(
    session: Session, run_pks: Sequence[int], names: Sequence[str], max_points: int
) -> list[dict[str, Any]]:
    """Step metrics of the given runs, at most ~``max_points`` per run and metric: a run with more steps is
    thinned to every n-th step in SQL (its last step always kept)."""
    ids = list(run_pks)
    if not ids or not names:
        return []
    last_steps = dict(session.execute(select(StepMetric.run_id, func.max(StepMetric.step))
                                      .where(StepMetric.run_id.in_(ids)).group_by(StepMetric.run_id)).all())
    out: list[dict[str, Any]] = []
    for run_pk, last in last_steps.items():
        stride = max(1, -(-(last + 1) // max_points))
        stmt = (select(StepMetric.run_id, StepMetric.step, StepMetric.name, StepMetric.value)
                .where(StepMetric.run_id == run_pk, StepMetric.name.in_(list(names)),
                       (StepMetric.step % stride == 0) | (StepMetric.step == last))
                .order_by(StepMetric.step).limit(max_points * len(names) + len(names)))
        out.extend(_rows(session, stmt))
    return out


def checkpoints_of(session: Session, run_pks: Sequence[int], limit: int) -> list[dict[str, Any]]:
    stmt = (select(Checkpoint.run_id, Checkpoint.step, Checkpoint.artifact_key, Checkpoint.created_at)
            .where(Checkpoint.run_id.in_(list(run_pks))).order_by(Checkpoint.run_id, Checkpoint.step).limit(limit))
    return _rows(session, stmt)


# --- models, evaluations, gate, review -------------------------------------------------------


def model_versions(session: Session, name: str, limit: int) -> list[dict[str, Any]]:
    """Newest versions of a model first, with their training run's id."""
    stmt = (select(ModelVersion.id, ModelVersion.name, ModelVersion.version, ModelVersion.status,
                   ModelVersion.created_at, ModelVersion.parent_id, TrainingRun.run_id)
            .outerjoin(TrainingRun, TrainingRun.id == ModelVersion.training_run_id)
            .where(ModelVersion.name == name).order_by(ModelVersion.version.desc()).limit(limit))
    return [row | {"label": f"{row['name']}:v{row['version']}"} for row in _rows(session, stmt)]


def alias_now(session: Session, name: str, alias: str) -> dict[str, Any] | None:
    """Where ``alias`` points and since when."""
    stmt = (select(ModelVersion.id, ModelVersion.version, ModelAlias.updated_at)
            .join(ModelVersion, ModelVersion.id == ModelAlias.model_version_id)
            .where(ModelAlias.name == name, ModelAlias.alias == alias))
    row = session.execute(stmt).mappings().first()
    return dict(row) | {"label": f"{name}:v{row['version']}"} if row is not None else None


def alias_events(session: Session, name: str, alias: str, limit: int) -> list[dict[str, Any]]:
    """The newest moves of an alias: what served from when, who moved it and why."""
    target, previous = aliased(ModelVersion), aliased(ModelVersion)
    stmt = (select(AliasEvent.changed_at, AliasEvent.actor, AliasEvent.reason, AliasEvent.is_rollback,
                   target.version.label("version"), previous.version.label("previous_version"))
            .outerjoin(target, target.id == AliasEvent.model_version_id)
            .outerjoin(previous, previous.id == AliasEvent.previous_version_id)
            .where(AliasEvent.name == name, AliasEvent.alias == alias)
            .order_by(AliasEvent.changed_at.desc(), AliasEvent.id.desc()).limit(limit))
    return _rows(session, stmt)


def evaluation_rows(session: Session, name: str, metrics: Sequence[str], limit: int) -> list[dict[str, Any]]:
    """Evaluation values of model ``name`` for the given metrics (newest model versions first)."""
    stmt = (select(ModelVersion.version, Evaluation.dataset, Evaluation.metric, Evaluation.slice, Evaluation.value,
                   Evaluation.details, Evaluation.created_at)
            .join(ModelVersion, ModelVersion.id == Evaluation.model_version_id)
            .where(ModelVersion.name == name, Evaluation.metric.in_(list(metrics)))
            .order_by(ModelVersion.version.desc(), Evaluation.id).limit(limit))
    return _rows(session, stmt)


def latest_gate_decisions(session: Session, model_version_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """The decision in force (the newest) of each given model version."""
    newest = (select(func.max(GateDecision.id)).where(GateDecision.model_version_id.in_(list(model_version_ids)))
              .group_by(GateDecision.model_version_id))
    stmt = (select(GateDecision.id, GateDecision.model_version_id, GateDecision.verdict, GateDecision.checks,
                   GateDecision.created_at, GateDecision.report_key)
            .where(GateDecision.id.in_(newest)))
    return {row["model_version_id"]: row for row in _rows(session, stmt)}


def pending_reviews(session: Session, name: str, limit: int) -> list[dict[str, Any]]:
    stmt = (select(ReviewRequest.id, ReviewRequest.model_version_id, ReviewRequest.flow_run_id,
                   ReviewRequest.reason, ReviewRequest.requested_at, ReviewRequest.deadline, ModelVersion.version)
            .join(ModelVersion, ModelVersion.id == ReviewRequest.model_version_id)
            .where(ReviewRequest.status == ReviewRequestStatus.PENDING, ModelVersion.name == name)
            .order_by(ReviewRequest.requested_at, ReviewRequest.id).limit(limit))
    return [row | {"label": f"{name}:v{row['version']}"} for row in _rows(session, stmt)]


def recent_reviews(session: Session, name: str, limit: int) -> list[dict[str, Any]]:
    stmt = (select(Review.created_at, Review.reviewer, Review.decision, Review.comment, ModelVersion.version)
            .join(ModelVersion, ModelVersion.id == Review.model_version_id)
            .where(ModelVersion.name == name).order_by(Review.id.desc()).limit(limit))
    return _rows(session, stmt)


def models_with_status(session: Session, name: str, statuses: Sequence[ModelStatus], limit: int) -> list[dict[str, Any]]:
    stmt = (select(ModelVersion.id, ModelVersion.version, ModelVersion.status, ModelVersion.created_at)
            .where(ModelVersion.name == name, ModelVersion.status.in_(list(statuses)))
            .order_by(ModelVersion.version.desc()).limit(limit))
    return _rows(session, stmt)


def audit_log(session: Session, limit: int, action_prefix: str | None = None) -> list[dict[str, Any]]:
    stmt = select(AuditEvent.at, AuditEvent.actor, AuditEvent.action, AuditEvent.target, AuditEvent.source,
                  AuditEvent.details)
    if action_prefix:
        stmt = stmt.where(AuditEvent.action.startswith(action_prefix, autoescape=True))
    return _rows(session, stmt.order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).limit(limit))
