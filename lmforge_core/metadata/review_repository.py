"""Repository functions of the promotion gate, human review requests and the audit trail.

Same contract as :mod:`lmforge_core.metadata.repository`: every function takes the caller's session and
never commits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from lmforge_core.metadata.models import (
    AuditEvent,
    GateDecision,
    GateVerdict,
    ReviewRequest,
    ReviewRequestStatus,
    utcnow,
)


def record_gate_decision(
    session: Session,
    *,
    model_version_id: int,
    verdict: GateVerdict,
    checks: Sequence[Mapping[str, Any]],
    baseline_model_version_id: int | None = None,
    report_key: str | None = None,
) -> GateDecision:
    decision = GateDecision(
        model_version_id=model_version_id,
        verdict=verdict,
        checks=[dict(c) for c in checks],
        baseline_model_version_id=baseline_model_version_id,
        report_key=report_key,
    )
    session.add(decision)
    session.flush()
    return decision


def latest_gate_decision(session: Session, model_version_id: int) -> GateDecision | None:
    stmt = (select(GateDecision).where(GateDecision.model_version_id == model_version_id)
            .order_by(GateDecision.created_at.desc(), GateDecision.id.desc()).limit(1))
    return session.scalars(stmt).first()


def open_review_request(
    session: Session,
    *,
    model_version_id: int,
    reason: str,
    flow_run_id: str | None = None,
    deadline: datetime | None = None,
) -> ReviewRequest:
    request = ReviewRequest(model_version_id=model_version_id, reason=reason, flow_run_id=flow_run_id,
                            deadline=deadline)
    session.add(request)
    session.flush()
    return request


def pending_review_requests(session: Session, limit: int = 100) -> list[ReviewRequest]:
    stmt = (select(ReviewRequest).where(ReviewRequest.status == ReviewRequestStatus.PENDING)
            .order_by(ReviewRequest.requested_at, ReviewRequest.id).limit(limit))
    return list(session.scalars(stmt))


def pending_review_for(session: Session, model_version_id: int) -> ReviewRequest | None:
    stmt = (select(ReviewRequest)
            .where(ReviewRequest.model_version_id == model_version_id,
                   ReviewRequest.status == ReviewRequestStatus.PENDING)
            .order_by(ReviewRequest.id.desc()).limit(1))
    return session.scalars(stmt).first()


def resolve_review_request(
    session: Session, request: ReviewRequest, status: ReviewRequestStatus, review_id: int | None = None
) -> ReviewRequest:
    if request.status is not ReviewRequestStatus.PENDING:
        raise ValueError(f"review request {request.id} is already {request.status.value}")
    if status is ReviewRequestStatus.PENDING:
        raise ValueError("a review request is resolved to approved, rejected or timed_out, not pending")
    request.status = status
    request.resolved_at = utcnow()
    request.review_id = review_id
    session.flush()
    return request


def record_audit(
    session: Session,
    *,
    actor: str,
    action: str,
    target: str = "",
    source: str = "cli",
    details: Mapping[str, Any] | None = None,
) -> AuditEvent:
    if not actor.strip():
        raise ValueError("an audited action needs the actor's name")
    event = AuditEvent(actor=actor, action=action, target=target, source=source, details=dict(details or {}))
    session.add(event)
    session.flush()
    return event


def audit_events(session: Session, limit: int = 200, actor: str | None = None) -> list[AuditEvent]:
    stmt = select(AuditEvent)
    if actor is not None:
        stmt = stmt.where(AuditEvent.actor == actor)
    return list(session.scalars(stmt.order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).limit(limit)))
