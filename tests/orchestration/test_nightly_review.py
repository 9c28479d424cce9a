"""The nightly flow's outcomes after training, on Prefect's test harness with the real stores: a published
champion, a night with nothing new, a rejected challenger, and a night waiting for a human review."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.flow_runs import resume_flow_run

from flows.nightly import nightly_retrain
from lmforge_core.metadata import repository as repo
from lmforge_core.metadata import review_repository as reviews
from lmforge_core.metadata.models import (
    DataBatch,
    DatasetVersion,
    Deployment,
    ModelStatus,
    ModelVersion,
    ReviewDecision,
    ReviewRequest,
    ReviewRequestStatus,
    TrainingRun,
)
from lmforge_core.runtime import Runtime
from tasks.publish.publish import repository_path
from tasks.review.actions import apply_review


def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _counts(rt: Runtime) -> dict[str, int]:
    with rt.metadata.session() as session:
        return {kind.__name__: session.query(kind).count()
                for kind in (DataBatch, DatasetVersion, TrainingRun, ModelVersion, Deployment)}


@pytest.mark.slow
def test_champion_published_then_nothing_new_then_a_rejected_challenger_leaves_serving_untouched(
        prefect_harness, night_config, open_config, shard_writer, impossible_gate, tmp_path: Path) -> None:
    source = tmp_path / "src"
    shard_writer(source, "part-00000.jsonl", range(24))
    config = night_config()
    rt = open_config(config)

    first = nightly_retrain(source=str(source), config=str(config))
    assert first["status"] == "published", first
    assert first["evaluation"]["verdict"] == "promote" and first["publish"]["triton_version"] == 1
    assert first["promotion"] == {"model": "lmforge:v1", "previous": None, "moved": True}
    with rt.metadata.session() as session:  # the published champion is production: the next night builds on it
        assert repo.get_alias(session, rt.settings.model_name, repo.PRODUCTION).version == 1
    repository = repository_path(rt)
    served = _tree(repository)
    assert any("/1/" in name for name in served), served
    after_first = _counts(rt)

    second = nightly_retrain(source=str(source), config=str(config))
    assert second["status"] == "nothing_new" and "nothing new" in second["message"]
    assert _counts(rt) == after_first

    shard_writer(source, "part-00001.jsonl", range(500, 524))
    strict = night_config(workspace=str(rt.settings.workspace), evaluate={"gate": impossible_gate})
    third = nightly_retrain(source=str(source), config=str(strict))
    assert third["status"] == "rejected" and "the promotion gate rejected" in third["message"]
    assert third["evaluation"]["verdict"] == "reject"
    assert "promotion" not in third
    # the challenger continued from the champion and was gated against it, forgetting of ds 1 included
    names = {c["name"] for c in third["evaluation"]["checks"]}
    assert {"new-data perplexity vs production", "forgetting (earlier data, worst version)"} <= names, names
    assert _tree(repository) == served  # not a file added, changed or removed
    with rt.metadata.session() as session:
        assert repo.get_alias(session, rt.settings.model_name, rt.settings.serving.alias).version == 1
        assert [d.triton_version for d in session.query(Deployment)] == [1]
        challenger = repo.resolve_model_version(session, rt.settings.model_name, "v2")
        assert challenger.status is not ModelStatus.PRODUCTION
        assert repo.get_alias(session, rt.settings.model_name, repo.PRODUCTION).version == 1
        assert session.get(TrainingRun, challenger.training_run_id).base_model_version_id == \
            repo.resolve_model_version(session, rt.settings.model_name, "v1").id


def _night_in_thread(config: Path, source: str) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        out["state"] = nightly_retrain(source=source, config=str(config), return_state=True)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def _pending_request(rt: Runtime, thread: threading.Thread, timeout: float = 900) -> ReviewRequest:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and thread.is_alive():
        with rt.metadata.session() as session:
            pending = reviews.pending_review_requests(session)
            if pending:
                session.expunge_all()
                return pending[0]
        time.sleep(1)
    raise AssertionError("the night never asked for a review")


def test_a_night_suspended_for_review_and_rejected_publishes_nothing(
        prefect_harness, night_config, open_config, prose_source) -> None:
    config = night_config(orchestration={"review": {"required": True, "timeout_s": 900, "poll_interval_s": 1}})
    rt = open_config(config)
    thread, out = _night_in_thread(config, prose_source())

    request = _pending_request(rt, thread)
    assert request.flow_run_id and request.reason == "review required by configuration"
    outcome = apply_review(rt, model_ref=f"v{request.model_version_id}", decision=ReviewDecision.REJECT,
                           reviewer="alice", comment="answers drift off topic", source="cli")
    assert outcome.resumed, outcome.resume_error
    thread.join(timeout=600)

    night = out["state"].result()
    assert night["status"] == "review_rejected" and night["review"]["recorded_by_flow"] is False
    assert (night["review"]["decision"], night["review"]["reviewer"]) == ("reject", "alice")
    assert not repository_path(rt).exists() or not any(repository_path(rt).rglob("*.onnx"))
    with rt.metadata.session() as session:
        assert session.query(Deployment).count() == 0
        assert session.get(ReviewRequest, request.id).status is ReviewRequestStatus.REJECTED
        (review,) = repo.reviews_for(session, request.model_version_id)
        assert (review.reviewer, review.comment) == ("alice", "answers drift off topic")
        assert session.get(ModelVersion, request.model_version_id).status is ModelStatus.REJECTED


def test_a_review_nobody_gives_applies_the_configured_default_and_records_it(
        prefect_harness, night_config, open_config, prose_source) -> None:
    config = night_config(orchestration={"review": {"required": True, "timeout_s": 3, "poll_interval_s": 1,
                                                    "default": "reject"}})
    rt = open_config(config)

    night = nightly_retrain(source=prose_source(), config=str(config))

    assert night["status"] == "review_rejected" and night["review"]["timed_out"] is True
    with rt.metadata.session() as session:
        (request,) = session.query(ReviewRequest).all()
        assert request.status is ReviewRequestStatus.TIMED_OUT
        (review,) = repo.reviews_for(session, request.model_version_id)
        assert review.reviewer == "lmforge:timeout" and "configured default (reject)" in review.comment
        assert [e.action for e in reviews.audit_events(session)][:2] == ["review.timeout.reject", "review.requested"]
        assert session.query(Deployment).count() == 0


def _paused(flow_run_id: str, thread: threading.Thread, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline and thread.is_alive():
            if client.read_flow_run(UUID(flow_run_id)).state.is_paused():
                return
            time.sleep(0.5)
    raise AssertionError(f"flow run {flow_run_id} never paused")


def test_a_decision_given_through_prefect_itself_is_recorded_by_the_flow(
        prefect_harness, night_config, open_config, prose_source) -> None:
    """What Prefect's UI does on "Resume": `resume_flow_run` with the run input. No face recorded anything,
    so the flow records the review (source prefect) once; an input the store would refuse is refused at the
    resume already, and the run keeps waiting."""
    config = night_config(orchestration={"review": {"required": True, "timeout_s": 900, "poll_interval_s": 1}})
    rt = open_config(config)
    thread, out = _night_in_thread(config, prose_source())
    request = _pending_request(rt, thread)
    _paused(request.flow_run_id, thread)

    with pytest.raises(RuntimeError, match="Cannot resume this run"):
        resume_flow_run(UUID(request.flow_run_id), run_input={"decision": "reject", "reviewer": "  "})
    resume_flow_run(UUID(request.flow_run_id),
                    run_input={"decision": "reject", "reviewer": "carol", "comment": "off-topic samples"})
    thread.join(timeout=600)

    night = out["state"].result()
    assert night["status"] == "review_rejected" and night["review"]["recorded_by_flow"] is True
    with rt.metadata.session() as session:
        (review,) = repo.reviews_for(session, request.model_version_id)
        assert (review.reviewer, review.decision, review.comment) == ("carol", ReviewDecision.REJECT,
                                                                      "off-topic samples")
        resolved = session.get(ReviewRequest, request.id)
        assert (resolved.status, resolved.review_id) == (ReviewRequestStatus.REJECTED, review.id)
        assert session.get(ModelVersion, request.model_version_id).status is ModelStatus.REJECTED
        (audit,) = [e for e in reviews.audit_events(session) if e.action.startswith("review.reject")]
        assert (audit.actor, audit.source, audit.details["request_id"]) == ("carol", "prefect", request.id)
        assert session.query(Deployment).count() == 0
