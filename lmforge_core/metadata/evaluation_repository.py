"""Repository functions of evaluation results and of the publish guard.

Same contract as :mod:`lmforge_core.metadata.repository`: every function takes the caller's session and
never commits. Evaluation rows are ``(model_version, dataset, metric, slice) -> value``; ``dataset`` is a
dataset version (``ds-000002``) or a probe set (``probes/counterfactual@1``), so the rows with metric
``perplexity`` and slice ``all`` form the model-version x dataset-version matrix the dashboard draws.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from lmforge_core.metadata import repository as repo
from lmforge_core.metadata.models import (
    Evaluation,
    GateDecision,
    GateVerdict,
    ModelStatus,
    ModelVersion,
    Review,
    ReviewDecision,
)
from lmforge_core.metadata.review_repository import latest_gate_decision


class NotPublishableError(RuntimeError):
    """The model version may not be published (rejected, never evaluated, or awaiting review)."""


@dataclass(frozen=True)
class EvaluationRow:
    dataset: str
    metric: str
    value: float
    slice: str = "all"
    details: Mapping[str, Any] | None = None


def replace_evaluations(session: Session, model_version_id: int, rows: Iterable[EvaluationRow]) -> int:
    """Write ``rows`` for a model version, replacing earlier rows with the same (dataset, metric, slice):
    re-evaluating a version updates its figures instead of piling up duplicates."""
    count = 0
    for row in rows:
        session.execute(delete(Evaluation).where(
            Evaluation.model_version_id == model_version_id, Evaluation.dataset == row.dataset,
            Evaluation.metric == row.metric, Evaluation.slice == row.slice))
        repo.add_evaluation(session, model_version_id=model_version_id, dataset=row.dataset, metric=row.metric,
                            value=row.value, slice_name=row.slice, details=row.details)
        count += 1
    return count


def evaluation_value(session: Session, model_version_id: int, dataset: str, metric: str,
                     slice_name: str = "all") -> Evaluation | None:
    stmt = select(Evaluation).where(
        Evaluation.model_version_id == model_version_id, Evaluation.dataset == dataset,
        Evaluation.metric == metric, Evaluation.slice == slice_name).order_by(Evaluation.id.desc()).limit(1)
    return session.scalars(stmt).first()


def evaluation_rows(session: Session, model_version_id: int, metric: str | None = None) -> list[Evaluation]:
    stmt = select(Evaluation).where(Evaluation.model_version_id == model_version_id)
    if metric is not None:
        stmt = stmt.where(Evaluation.metric == metric)
    return list(session.scalars(stmt.order_by(Evaluation.dataset, Evaluation.metric, Evaluation.slice)))


def metric_matrix(session: Session, name: str, metric: str = "perplexity",
                  slice_name: str = "all") -> dict[str, Any]:
    """``{"model_versions": [labels], "datasets": [names], "values": {label: {dataset: value}}}`` of one
    metric over every version of model ``name`` (the dashboard's model x dataset matrix)."""
    stmt = (select(ModelVersion.version, Evaluation.dataset, Evaluation.value)
            .join(Evaluation, Evaluation.model_version_id == ModelVersion.id)
            .where(ModelVersion.name == name, Evaluation.metric == metric, Evaluation.slice == slice_name)
            .order_by(ModelVersion.version, Evaluation.dataset))
    values: dict[str, dict[str, float]] = {}
    datasets: set[str] = set()
    for version, dataset, value in session.execute(stmt):
        values.setdefault(f"{name}:v{version}", {})[dataset] = value
        datasets.add(dataset)
    return {"model_versions": list(values), "datasets": sorted(datasets), "values": values}


def evaluated_versions(session: Session, name: str) -> list[tuple[ModelVersion, GateDecision | None, int]]:
    """Every version of ``name`` with evaluation rows or a gate decision: (version, latest decision, rows)."""
    out = []
    for version in repo.list_model_versions(session, name):
        rows = len(evaluation_rows(session, version.id))
        decision = latest_gate_decision(session, version.id)
        if rows or decision is not None:
            out.append((version, decision, rows))
    return out


def _approving_review_after(session: Session, version_id: int, decision: GateDecision) -> bool:
    stmt = select(Review).where(Review.model_version_id == version_id, Review.created_at >= decision.created_at)
    latest = session.scalars(stmt.order_by(Review.created_at.desc(), Review.id.desc()).limit(1)).first()
    return latest is not None and latest.decision is ReviewDecision.APPROVE


def assert_publishable(session: Session, model_version_id: int) -> GateDecision:
    """Raise :class:`NotPublishableError` unless the version passed the promotion gate (or a reviewer
    approved it after the gate asked for review). Serving and orchestration call this before any publish."""
    version = session.get(ModelVersion, model_version_id)
    if version is None:
        raise NotPublishableError(f"model version id {model_version_id} does not exist")
    if version.status is ModelStatus.REJECTED:
        raise NotPublishableError(f"{version.label} was rejected by the promotion gate and can never be published")
    decision = latest_gate_decision(session, model_version_id)
    if decision is None:
        raise NotPublishableError(f"{version.label} has no gate decision; run `lmforge evaluate {version.version}`")
    if decision.verdict is GateVerdict.REJECT:
        raise NotPublishableError(f"{version.label} was rejected by the promotion gate and can never be published")
    if decision.verdict is GateVerdict.NEEDS_REVIEW and not _approving_review_after(session, version.id, decision):
        raise NotPublishableError(f"{version.label} needs a reviewer's approval before it can be published")
    return decision
