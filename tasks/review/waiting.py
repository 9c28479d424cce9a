"""The flow's side of a review: the request it waits on, the decision it received, and the configured
default when nobody decides.

A person's decision goes through :func:`tasks.review.actions.apply_review` (dashboard, ``lmforge review``),
which records it before it resumes the run. A run resumed through Prefect itself (the UI's resume form,
``resume_flow_run``) got a decision no face recorded: :func:`record_received_review` records it then.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from lmforge_core.metadata import orchestration_repository as orch
from lmforge_core.metadata import repository as repo
from lmforge_core.metadata import review_repository as reviews
from lmforge_core.metadata.models import (
    ModelStatus,
    ModelVersion,
    Review,
    ReviewDecision,
    ReviewRequest,
    ReviewRequestStatus,
)
from lmforge_core.runtime import Runtime
from tasks.review.actions import record_decision, resolve_model_ref

TIMEOUT_REVIEWER = "lmforge:timeout"


def open_request(runtime: Runtime, model_ref: str, reason: str, flow_run_id: str, timeout_s: int) -> dict[str, str]:
    """The review request of this flow run for ``model_ref``, opened (and audited) once: a resumed or retried
    run finds the one it opened. Returns its id, status and the model label."""
    with runtime.metadata.session() as session:
        model = resolve_model_ref(session, runtime.settings.model_name, model_ref)
        request = orch.review_request_of_flow_run(session, model.id, flow_run_id)
        if request is None:
            request = reviews.open_review_request(
                session, model_version_id=model.id, reason=reason, flow_run_id=flow_run_id,
                deadline=datetime.now(UTC) + timedelta(seconds=timeout_s))
            reviews.record_audit(session, actor="lmforge:flow", action="review.requested", target=model.label,
                                 source="flow", details={"request_id": request.id, "reason": reason,
                                                         "flow_run_id": flow_run_id, "timeout_s": timeout_s})
        return {"request_id": str(request.id), "status": request.status.value, "model": model.label}


def record_timeout(runtime: Runtime, request_id: int, default: str, timeout_s: int) -> dict[str, str]:
    """Nobody decided within ``timeout_s``: the request is closed as timed out and the configured ``default``
    (approve or reject) is recorded as the review of reviewer ``lmforge:timeout``, audited. A decision recorded
    meanwhile without reaching the run (its resume failed) is returned instead."""
    decision = ReviewDecision(default)
    comment = f"no reviewer decided within {timeout_s} s; the configured default ({default}) applies"
    with runtime.metadata.session() as session:
        request = session.get(ReviewRequest, request_id, with_for_update=True)
        if request is None:
            raise ValueError(f"review request {request_id} does not exist")
        if request.status is not ReviewRequestStatus.PENDING and request.review_id is not None:
            # decided in the store, but the run was never resumed (the resume failed): that decision stands.
            review = session.get(Review, request.review_id)
            assert review is not None  # the request's foreign key
            return {"decision": review.decision.value, "reviewer": review.reviewer, "comment": review.comment}
        model = session.get(ModelVersion, request.model_version_id)
        review = repo.add_review(session, model_version_id=request.model_version_id, reviewer=TIMEOUT_REVIEWER,
                                 decision=decision, comment=comment)
        reviews.resolve_review_request(session, request, ReviewRequestStatus.TIMED_OUT, review_id=review.id)
        repo.set_model_status(session, request.model_version_id,
                              ModelStatus.APPROVED if decision is ReviewDecision.APPROVE else ModelStatus.REJECTED)
        reviews.record_audit(session, actor=TIMEOUT_REVIEWER, action=f"review.timeout.{default}",
                             target=model.label if model else str(request.model_version_id), source="flow",
                             details={"request_id": request_id, "review_id": review.id})
    return {"decision": default, "reviewer": TIMEOUT_REVIEWER, "comment": comment}


def decision_in_store(runtime: Runtime, request_id: int) -> dict[str, str] | None:
    """The decision recorded for review request ``request_id`` (by the dashboard or `lmforge review`), or None
    while it is pending."""
    with runtime.metadata.session() as session:
        request = session.get(ReviewRequest, request_id)
        if request is None:
            raise ValueError(f"review request {request_id} does not exist")
        if request.status is ReviewRequestStatus.PENDING or request.review_id is None:
            return None
        review = session.get(Review, request.review_id)
        assert review is not None
        return {"decision": review.decision.value, "reviewer": review.reviewer, "comment": review.comment}


def record_received_review(runtime: Runtime, request_id: int, decision: str, reviewer: str, comment: str) -> bool:
    """Record the decision a waiting run received for request ``request_id``, exactly as ``lmforge review``
    records it (review, model status, request resolved, audit event with source ``prefect``), unless the
    request is already resolved (the CLI or dashboard recorded it before resuming): then nothing is written.
    Returns whether it recorded. The request row is locked, so two deciders cannot both record."""
    with runtime.metadata.session() as session:
        request = session.get(ReviewRequest, request_id, with_for_update=True)
        if request is None:
            raise ValueError(f"review request {request_id} does not exist")
        if request.status is not ReviewRequestStatus.PENDING:
            return False
        model = session.get(ModelVersion, request.model_version_id)
        assert model is not None  # a request's foreign key
        record_decision(session, model, decision=ReviewDecision(decision), reviewer=reviewer, comment=comment,
                        source="prefect", request=request)
    return True


def apply_default_at_deadline(runtime: Runtime, request_id: int, default: str, timeout_s: int) -> dict[str, str] | None:
    """The deadline of a suspended run's review: its process is gone, so nothing in it can time out. If the
    request is still pending, the configured default is recorded (as :func:`record_timeout` does) and the run
    is resumed with it. Returns the decision, or None when somebody decided first."""
    from tasks.review.run_input import ReviewInput, resume_with_review  # Prefect only when a run waits

    with runtime.metadata.session() as session:
        request = session.get(ReviewRequest, request_id)
        if request is None:
            raise ValueError(f"review request {request_id} does not exist")
        if request.status is not ReviewRequestStatus.PENDING:
            return None
        flow_run_id = request.flow_run_id
    decided = record_timeout(runtime, request_id, default, timeout_s)
    if flow_run_id:
        resume_with_review(flow_run_id, ReviewInput(**decided))
    return decided
