"""Review decisions, promotions and rollbacks of the ``production`` alias, each recorded with who did it.

One implementation for every face: the dashboard's buttons and ``lmforge review`` call these functions with
the authenticated actor and where the action came from (``source``: ``dashboard``, ``cli``, ``flow``).
Each action is one transaction (review + model status + request + audit event land together); a waiting
Prefect flow run is resumed only after that transaction has committed, so the flow reads the decision.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from lmforge_core.metadata import repository as repo
from lmforge_core.metadata import review_repository as reviews
from lmforge_core.metadata.models import (
    GateVerdict,
    ModelStatus,
    ModelVersion,
    ReviewDecision,
    ReviewRequest,
    ReviewRequestStatus,
)
from lmforge_core.runtime import Runtime

log = logging.getLogger(__name__)

MAX_COMMENT = 4000
MAX_ACTOR = 128
# "prefect": a decision that reached a waiting flow run through Prefect itself (its UI's resume form or
# `resume_flow_run`), recorded by the flow (tasks/review/waiting.py).
SOURCES = frozenset({"dashboard", "cli", "flow", "api", "prefect"})
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
_SERVED = (ModelStatus.PRODUCTION, ModelStatus.ARCHIVED)


class ReviewRefusedError(ValueError):
    """The action is not allowed on this model in its current state; the message says why."""


@dataclass(frozen=True)
class ReviewOutcome:
    model: str
    decision: str
    reviewer: str
    review_id: int
    request_id: int | None
    flow_run_id: str | None
    resumed: bool
    resume_error: str | None
    audit_id: int
    comment: str = ""


@dataclass(frozen=True)
class AliasMove:
    model: str
    previous: str | None
    alias: str
    changed_at: datetime
    is_rollback: bool
    audit_id: int


def _checked_actor(actor: str) -> str:
    name = actor.strip()
    if not name:
        raise ReviewRefusedError("an authenticated reviewer is required for this action")
    if len(name) > MAX_ACTOR or any(ch.isspace() and ch != " " for ch in name):
        raise ReviewRefusedError(f"reviewer name {name[:40]!r} is not a valid name (at most {MAX_ACTOR} characters)")
    return name


def _checked_text(text: str, what: str) -> str:
    if len(text) > MAX_COMMENT:
        raise ReviewRefusedError(f"the {what} is {len(text)} characters; at most {MAX_COMMENT} are kept")
    return text.strip()


def _checked_source(source: str) -> str:
    if source not in SOURCES:
        raise ReviewRefusedError(f"source {source!r} is not one of {sorted(SOURCES)}")
    return source


def resolve_model_ref(session: Session, default_name: str, model_ref: str) -> ModelVersion:
    """``model_ref`` is ``name:v3``, ``v3``, ``3`` or an alias (``production``), optionally ``name:alias``."""
    ref = model_ref.strip()
    name, _, rest = ref.rpartition(":")
    name = name or default_name
    if not rest or not set(name) <= _NAME_CHARS or not set(rest) <= _NAME_CHARS:
        raise ReviewRefusedError(f"model reference {model_ref!r} is not NAME:vN, vN, N or an alias name")
    return repo.resolve_model_version(session, name, rest)


def _refuse_gate_rejected(session: Session, model: ModelVersion, action: str) -> GateVerdict | None:
    gate = reviews.latest_gate_decision(session, model.id)
    if gate is not None and gate.verdict is GateVerdict.REJECT:
        failed = [str(c.get("name")) for c in gate.checks if not c.get("passed", True)]
        raise ReviewRefusedError(
            f"{model.label} was rejected by the promotion gate (failed checks: {', '.join(failed) or 'see gate table'}); "
            f"it cannot be {action}"
        )
    return gate.verdict if gate is not None else None


def record_decision(session: Session, model: ModelVersion, *, decision: ReviewDecision, reviewer: str, comment: str,
                    source: str, request: ReviewRequest | None) -> ReviewOutcome:
    """The one record of an approve/reject decision, in the caller's transaction: the review, the model's
    status, ``request`` resolved (when given) and the audit event. Checks the decision is allowed; returns
    the outcome with nothing resumed (only :func:`apply_review` resumes a waiting flow run)."""
    if decision not in (ReviewDecision.APPROVE, ReviewDecision.REJECT):
        raise ReviewRefusedError(f"a review decides approve or reject, not {decision!s}; use rollback_production")
    reviewer, comment, source = _checked_actor(reviewer), _checked_text(comment, "comment"), _checked_source(source)
    if model.status in _SERVED:
        raise ReviewRefusedError(f"{model.label} is {model.status.value}; it has already served and is not reviewed")
    approved = decision is ReviewDecision.APPROVE
    if approved:
        _refuse_gate_rejected(session, model, "approved")
    review = repo.add_review(session, model_version_id=model.id, reviewer=reviewer, decision=decision, comment=comment)
    repo.set_model_status(session, model.id, ModelStatus.APPROVED if approved else ModelStatus.REJECTED)
    if request is not None:
        status = ReviewRequestStatus.APPROVED if approved else ReviewRequestStatus.REJECTED
        reviews.resolve_review_request(session, request, status, review_id=review.id)
    request_id, flow_run_id = (request.id, request.flow_run_id) if request is not None else (None, None)
    event = reviews.record_audit(
        session, actor=reviewer, action=f"review.{decision.value}", target=model.label, source=source,
        details={"comment": comment, "review_id": review.id, "request_id": request_id, "flow_run_id": flow_run_id},
    )
    return ReviewOutcome(model=model.label, decision=decision.value, reviewer=reviewer, review_id=review.id,
                         request_id=request_id, flow_run_id=flow_run_id, resumed=False, resume_error=None,
                         audit_id=event.id, comment=comment)


def apply_review(
    runtime: Runtime, *, model_ref: str, decision: ReviewDecision, reviewer: str, comment: str, source: str
) -> ReviewOutcome:
    """Record an approve/reject review of a model version, resolve its pending review request, audit it,
    and resume the Prefect flow run that waits for it (when the request names one)."""
    with runtime.metadata.session() as session:
        model = resolve_model_ref(session, runtime.settings.model_name, model_ref)
        outcome = record_decision(session, model, decision=decision, reviewer=reviewer, comment=comment,
                                  source=source, request=reviews.pending_review_for(session, model.id))
    # A run on Prefect's temporary local API (no PREFECT_API_URL) is out of reach of this process; it polls the
    # store for the decision just recorded (flows/review.py), so there is nothing to resume.
    flow_run_id = outcome.flow_run_id
    reachable = bool(flow_run_id) and _prefect_api_configured()
    resume_error = (_resume(runtime, flow_run_id, decision, outcome.reviewer, outcome.comment, outcome.model)
                    if reachable and flow_run_id else None)
    return dataclasses.replace(outcome, resumed=reachable and resume_error is None, resume_error=resume_error)


def _prefect_api_configured() -> bool:
    from prefect.settings import PREFECT_API_URL  # Prefect only when a flow waits

    return bool(PREFECT_API_URL.value())


def _resume(runtime: Runtime, flow_run_id: str, decision: ReviewDecision, reviewer: str, comment: str,
            label: str) -> str | None:
    """Resume the waiting flow run; a failure (run timed out, server down) is returned and audited, since
    the review itself is already recorded and must not be lost."""
    from tasks.review.run_input import ReviewInput, resume_with_review  # Prefect only when a flow waits

    try:
        resume_with_review(flow_run_id, ReviewInput(decision=decision.value, reviewer=reviewer, comment=comment))
        return None
    except Exception as exc:  # any Prefect/client failure: the review stands, the failure is recorded
        message = f"could not resume flow run {flow_run_id}: {type(exc).__name__}: {exc}"
        log.warning("%s (review of %s by %s is recorded)", message, label, reviewer)
        with runtime.metadata.session() as session:
            reviews.record_audit(session, actor=reviewer, action="review.resume_failed", target=label,
                                 source="flow", details={"flow_run_id": flow_run_id, "error": message[:500]})
        return message


def _move(event_model: ModelVersion, previous: ModelVersion | None, changed_at: datetime, is_rollback: bool,
          audit_id: int) -> AliasMove:
    return AliasMove(model=event_model.label, previous=previous.label if previous is not None else None,
                     alias=repo.PRODUCTION, changed_at=changed_at, is_rollback=is_rollback, audit_id=audit_id)


def promote(runtime: Runtime, *, model_ref: str, actor: str, reason: str, source: str) -> AliasMove:
    """Point ``production`` at a model version. Refused for a version the gate rejected, one a reviewer
    rejected, and one the gate sent to review that no reviewer has approved yet."""
    actor, reason, source = _checked_actor(actor), _checked_text(reason, "reason"), _checked_source(source)
    with runtime.metadata.session() as session:
        model = resolve_model_ref(session, runtime.settings.model_name, model_ref)
        verdict = _refuse_gate_rejected(session, model, "promoted")
        if model.status is ModelStatus.REJECTED:
            raise ReviewRefusedError(f"{model.label} was rejected by a reviewer; it cannot be promoted")
        if model.status is ModelStatus.PRODUCTION:
            raise ReviewRefusedError(f"{model.label} is already the production model")
        if model.status is not ModelStatus.APPROVED and verdict is not GateVerdict.PROMOTE:
            why = "has no gate decision" if verdict is None else "awaits a reviewer's approval"
            raise ReviewRefusedError(f"{model.label} {why}; approve it before promoting")
        previous = repo.get_alias(session, model.name, repo.PRODUCTION)
        event = repo.set_alias(session, name=model.name, alias=repo.PRODUCTION, model_version_id=model.id,
                               actor=actor, reason=reason or "promoted")
        assert event is not None  # the model is not production (checked above), so the alias moves
        audit = reviews.record_audit(
            session, actor=actor, action="model.promote", target=model.label, source=source,
            details={"previous": previous.label if previous else None, "reason": reason, "alias_event_id": event.id},
        )
        return _move(model, previous, event.changed_at, False, audit.id)


def rollback_production(runtime: Runtime, *, actor: str, reason: str, source: str) -> AliasMove:
    """Point ``production`` back at the version it served before the current one; the version rolled back
    from gets a ``rollback`` review by ``actor``, so its record says why it stopped serving."""
    actor, reason, source = _checked_actor(actor), _checked_text(reason, "reason"), _checked_source(source)
    name = runtime.settings.model_name
    with runtime.metadata.session() as session:
        current = repo.get_alias(session, name, repo.PRODUCTION)
        event = repo.rollback_alias(session, name=name, alias=repo.PRODUCTION, actor=actor,
                                    reason=reason or "rollback")
        target = session.get(ModelVersion, event.model_version_id)
        assert current is not None and target is not None  # rollback_alias found both or raised
        repo.add_review(session, model_version_id=current.id, reviewer=actor, decision=ReviewDecision.ROLLBACK,
                        comment=reason)
        audit = reviews.record_audit(
            session, actor=actor, action="model.rollback", target=target.label, source=source,
            details={"previous": current.label, "reason": reason, "alias_event_id": event.id},
        )
        return _move(target, current, event.changed_at, True, audit.id)
