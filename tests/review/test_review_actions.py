"""The review actions on a real metadata store (SQLite and PostgreSQL), and the resume of a real paused
Prefect flow run."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from lmforge_core.metadata import repository as repo
from lmforge_core.metadata import review_repository as reviews
from lmforge_core.metadata.models import GateVerdict, ModelStatus, ReviewDecision, ReviewRequestStatus
from lmforge_core.runtime import Runtime, open_runtime
from lmforge_core.settings import load_settings
from tasks.review import ReviewRefusedError, apply_review, promote, rollback_production

APPROVE, REJECT = ReviewDecision.APPROVE, ReviewDecision.REJECT


@pytest.fixture(params=["sqlite", "postgresql"])
def rt(request: pytest.FixtureRequest, tmp_path: Path) -> Runtime:
    url = "" if request.param == "sqlite" else request.getfixturevalue("fresh_postgres_url")
    runtime = open_runtime(load_settings(workspace=tmp_path / "ws", database_url=url))
    yield runtime
    runtime.metadata.dispose()


def add_model(rt: Runtime, verdict: GateVerdict | None, *, request: bool = False, flow_run_id: str | None = None) -> str:
    """A candidate model version with a gate decision and, optionally, a pending review request."""
    with rt.metadata.session() as s:
        model = repo.register_model_version(s, name="lmforge", training_run_pk=None, parent_id=None, artifacts={})
        if verdict is not None:
            checks = [{"name": "perplexity_regression", "metric": "perplexity", "value": 9.0, "bound": 8.0,
                       "kind": "max", "passed": verdict is GateVerdict.PROMOTE, "verdict": verdict.value, "detail": ""}]
            reviews.record_gate_decision(s, model_version_id=model.id, verdict=verdict, checks=checks)
        if request:
            reviews.open_review_request(s, model_version_id=model.id, reason="gate: needs review",
                                        flow_run_id=flow_run_id)
        return model.label


def test_approve_records_review_status_request_and_audit(rt: Runtime) -> None:
    label = add_model(rt, GateVerdict.NEEDS_REVIEW, request=True)
    outcome = apply_review(rt, model_ref=label, decision=APPROVE, reviewer="ada", comment="ppl ok", source="dashboard")
    assert outcome.model == label and outcome.resumed is False and outcome.flow_run_id is None
    with rt.metadata.session() as s:
        model = repo.resolve_model_version(s, "lmforge", "1")
        assert model.status is ModelStatus.APPROVED
        [review] = repo.reviews_for(s, model.id)
        assert (review.reviewer, review.decision, review.comment) == ("ada", APPROVE, "ppl ok")
        assert reviews.pending_review_requests(s) == []
        [event] = reviews.audit_events(s)
        assert (event.actor, event.action, event.target, event.source) == ("ada", "review.approve", label, "dashboard")
        assert event.details["review_id"] == review.id == outcome.review_id
        assert event.details["request_id"] == outcome.request_id is not None


def test_reject_then_promote_is_refused(rt: Runtime) -> None:
    label = add_model(rt, GateVerdict.NEEDS_REVIEW, request=True)
    apply_review(rt, model_ref="v1", decision=REJECT, reviewer="ada", comment="toxic", source="cli")
    with pytest.raises(ReviewRefusedError, match="rejected by a reviewer"):
        promote(rt, model_ref=label, actor="ada", reason="", source="cli")
    with rt.metadata.session() as s:
        assert repo.get_alias(s, "lmforge", "production") is None
        assert repo.resolve_model_version(s, "lmforge", "1").status is ModelStatus.REJECTED


def test_gate_rejected_model_is_never_approved_nor_promoted(rt: Runtime) -> None:
    label = add_model(rt, GateVerdict.REJECT, request=True)
    with pytest.raises(ReviewRefusedError, match="rejected by the promotion gate.*perplexity_regression"):
        apply_review(rt, model_ref=label, decision=APPROVE, reviewer="ada", comment="", source="dashboard")
    with pytest.raises(ReviewRefusedError, match="rejected by the promotion gate"):
        promote(rt, model_ref=label, actor="ada", reason="force", source="cli")
    with rt.metadata.session() as s:  # nothing of the refused approval was written
        model = repo.resolve_model_version(s, "lmforge", "1")
        assert model.status is ModelStatus.CANDIDATE and repo.reviews_for(s, model.id) == []
        assert len(reviews.pending_review_requests(s)) == 1 and reviews.audit_events(s) == []


def test_promote_needs_approval_when_gate_asked_for_review(rt: Runtime) -> None:
    add_model(rt, GateVerdict.NEEDS_REVIEW, request=True)
    with pytest.raises(ReviewRefusedError, match="awaits a reviewer's approval"):
        promote(rt, model_ref="1", actor="ada", reason="", source="dashboard")
    apply_review(rt, model_ref="1", decision=APPROVE, reviewer="ada", comment="", source="dashboard")
    move = promote(rt, model_ref="lmforge:v1", actor="ada", reason="nightly", source="dashboard")
    assert (move.model, move.previous, move.is_rollback) == ("lmforge:v1", None, False)
    with pytest.raises(ReviewRefusedError, match="already the production model"):
        promote(rt, model_ref="v1", actor="ada", reason="", source="dashboard")
    with rt.metadata.session() as s:
        assert repo.get_alias(s, "lmforge", "production").label == "lmforge:v1"
        [history] = repo.alias_history(s, "lmforge", "production")
        assert (history.actor, history.reason) == ("ada", "nightly")
        assert [e.action for e in reviews.audit_events(s)] == ["model.promote", "review.approve"]


def test_rollback_restores_previous_production_and_is_recorded(rt: Runtime) -> None:
    add_model(rt, GateVerdict.PROMOTE)
    add_model(rt, GateVerdict.PROMOTE)
    promote(rt, model_ref="v1", actor="ada", reason="", source="cli")
    move = promote(rt, model_ref="v2", actor="ada", reason="", source="cli")
    assert move.previous == "lmforge:v1"
    back = rollback_production(rt, actor="bob", reason="latency regression", source="dashboard")
    assert (back.model, back.previous, back.is_rollback) == ("lmforge:v1", "lmforge:v2", True)
    with rt.metadata.session() as s:
        assert repo.get_alias(s, "lmforge", "production").label == "lmforge:v1"
        v2 = repo.resolve_model_version(s, "lmforge", "2")
        assert v2.status is ModelStatus.ARCHIVED
        assert [(r.reviewer, r.decision) for r in repo.reviews_for(s, v2.id)] == [("bob", ReviewDecision.ROLLBACK)]
        assert reviews.audit_events(s)[0].action == "model.rollback"
    with pytest.raises(repo.NotFoundError, match="no earlier version"):
        rollback_production(rt, actor="bob", reason="", source="dashboard")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"reviewer": "  "}, "authenticated reviewer is required"),
    ({"model_ref": "lmforge:v1; drop"}, "is not NAME:vN"),
    ({"decision": ReviewDecision.ROLLBACK}, "approve or reject"),
    ({"source": "browser"}, "source 'browser'"),
    ({"comment": "x" * 5000}, "at most 4000"),
])
def test_bad_review_input_is_refused_with_its_cause(rt: Runtime, kwargs: dict, message: str) -> None:
    add_model(rt, GateVerdict.NEEDS_REVIEW, request=True)
    args = {"model_ref": "v1", "decision": APPROVE, "reviewer": "ada", "comment": "", "source": "cli"} | kwargs
    with pytest.raises(ReviewRefusedError, match=message):
        apply_review(rt, **args)
    with rt.metadata.session() as s:
        assert reviews.audit_events(s) == []


def test_unknown_model_names_the_model(rt: Runtime) -> None:
    with pytest.raises(repo.NotFoundError, match="lmforge:v7"):
        apply_review(rt, model_ref="v7", decision=APPROVE, reviewer="ada", comment="", source="cli")


def test_resume_failure_keeps_the_review_and_is_audited(rt: Runtime) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    add_model(rt, GateVerdict.NEEDS_REVIEW, request=True, flow_run_id="not-a-uuid")
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):  # a server to resume on
        outcome = apply_review(rt, model_ref="v1", decision=APPROVE, reviewer="ada", comment="", source="dashboard")
    assert outcome.resumed is False and "not a flow run id" in outcome.resume_error
    with rt.metadata.session() as s:
        assert [e.action for e in reviews.audit_events(s)] == ["review.resume_failed", "review.approve"]
        assert repo.resolve_model_version(s, "lmforge", "1").status is ModelStatus.APPROVED


@pytest.mark.slow
def test_approval_resumes_the_paused_flow_run_with_the_review(tmp_path: Path, prefect_harness: None) -> None:
    from prefect import flow
    from prefect.context import get_run_context
    from prefect.flow_runs import pause_flow_run

    from tasks.review.run_input import ReviewInput

    started: dict[str, str] = {}
    result: dict[str, object] = {}

    @flow
    def waits_for_review() -> tuple[str, str, str]:
        started["id"] = str(get_run_context().flow_run.id)
        review = pause_flow_run(wait_for_input=ReviewInput, timeout=90, poll_interval=1)
        return review.decision, review.reviewer, review.comment

    thread = threading.Thread(target=lambda: result.setdefault("value", waits_for_review()), daemon=True)
    thread.start()
    rt = open_runtime(load_settings(workspace=tmp_path / "ws"))
    _wait_until_paused(started)
    add_model(rt, GateVerdict.NEEDS_REVIEW, request=True, flow_run_id=started["id"])
    outcome = apply_review(rt, model_ref="v1", decision=APPROVE, reviewer="ada", comment="go", source="dashboard")
    thread.join(timeout=60)
    assert outcome.resumed is True and outcome.resume_error is None
    assert result["value"] == ("approve", "ada", "go")
    with rt.metadata.session() as s:
        assert s.get(reviews.ReviewRequest, outcome.request_id).status is ReviewRequestStatus.APPROVED
    rt.metadata.dispose()


@pytest.mark.slow
def test_a_decision_given_before_the_run_reaches_its_pause_still_resumes_it(
        tmp_path: Path, prefect_harness: None) -> None:
    """The request is open (a reviewer sees it) a moment before the run pauses; a decision in between waits
    for the pause instead of failing to resume a running run (which would then wait for nobody)."""
    from prefect import flow
    from prefect.context import get_run_context
    from prefect.flow_runs import pause_flow_run

    from tasks.review.run_input import ReviewInput

    started: dict[str, str] = {}
    result: dict[str, object] = {}

    @flow
    def asks_then_pauses() -> str:
        started["id"] = str(get_run_context().flow_run.id)
        time.sleep(3)  # between opening the request and pausing
        return pause_flow_run(wait_for_input=ReviewInput, timeout=90, poll_interval=1).reviewer

    thread = threading.Thread(target=lambda: result.setdefault("value", asks_then_pauses()), daemon=True)
    thread.start()
    rt = open_runtime(load_settings(workspace=tmp_path / "ws"))
    deadline = time.monotonic() + 60
    while "id" not in started and time.monotonic() < deadline:
        time.sleep(0.1)
    add_model(rt, GateVerdict.NEEDS_REVIEW, request=True, flow_run_id=started["id"])
    outcome = apply_review(rt, model_ref="v1", decision=APPROVE, reviewer="ada", comment="", source="cli")
    thread.join(timeout=60)
    assert outcome.resumed is True, outcome.resume_error
    assert result["value"] == "ada"
    rt.metadata.dispose()


def test_a_wait_that_times_out_after_a_decision_was_recorded_keeps_that_decision(rt: Runtime) -> None:
    """The decision is in the store but never reached the run (its resume failed): when the wait ends, the
    run takes that decision, not the configured default."""
    from tasks.review.waiting import record_timeout

    label = add_model(rt, GateVerdict.NEEDS_REVIEW, request=True)
    request_id = _request_id(rt, label)
    apply_review(rt, model_ref=label, decision=APPROVE, reviewer="ada", comment="fine", source="cli")
    assert record_timeout(rt, request_id, "reject", 60) == {"decision": "approve", "reviewer": "ada",
                                                            "comment": "fine"}
    with rt.metadata.session() as s:
        assert [r.reviewer for r in repo.reviews_for(s, 1)] == ["ada"]
        assert s.get(reviews.ReviewRequest, request_id).status is ReviewRequestStatus.APPROVED


def _wait_until_paused(started: dict[str, str]) -> None:
    from uuid import UUID

    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if "id" in started:
            with get_client(sync_client=True) as client:
                state = client.read_flow_run(UUID(started["id"])).state
            if state is not None and state.is_paused():
                return
        time.sleep(0.5)
    raise AssertionError("the flow run never paused")


def _request_id(rt: Runtime, label: str) -> int:
    with rt.metadata.session() as s:
        model = repo.resolve_model_version(s, "lmforge", label.split(":v")[1])
        request = reviews.pending_review_for(s, model.id)
        assert request is not None
        return request.id


def test_a_run_on_the_temporary_api_sees_a_decision_made_by_another_process(rt: Runtime) -> None:
    """`lmforge nightly` on Prefect's temporary API can't be resumed from outside: it waits on the store,
    where the dashboard or `lmforge review` records the decision (here from another thread)."""
    from prefect.exceptions import FlowPauseTimeout

    from flows.review import _wait_in_store

    label = add_model(rt, GateVerdict.NEEDS_REVIEW, request=True)
    request_id = _request_id(rt, label)
    decided_outcome = []
    decide = threading.Timer(0.5, lambda: decided_outcome.append(apply_review(
        rt, model_ref=label, decision=APPROVE, reviewer="ana", comment="fine", source="cli")))
    decide.start()
    answer = _wait_in_store(rt, request_id, timeout_s=600, poll_s=0.1)  # a timeout would raise, not answer
    decide.join()
    assert (answer.decision, answer.reviewer, answer.comment) == ("approve", "ana", "fine")
    assert decided_outcome and decided_outcome[0].resumed is False and decided_outcome[0].resume_error is None
    other = add_model(rt, GateVerdict.NEEDS_REVIEW, request=True)
    with pytest.raises(FlowPauseTimeout, match="no review of request"):
        _wait_in_store(rt, _request_id(rt, other), timeout_s=1, poll_s=0.2)
