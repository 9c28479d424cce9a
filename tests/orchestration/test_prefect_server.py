"""End to end on a real Prefect server: `prefect server start` on the local PostgreSQL (a database of its
own), the deployments of prefect.yaml registered by `lmforge deploy`, and one process work-pool worker
shared by this module's tests:

- the catch-up policy on two missed nights ("latest": the earlier one ends as a recorded no-op; "all": both);
- a night triggered twice with the same data snapshot (one run) that suspends for review (its process
  exits), is approved with `lmforge review approve`, resumes and publishes;
- a night that suspends and is rejected with `lmforge review reject`: it publishes nothing.

The schedule test comes first: it checks that Prefect's scheduler creates the 02:00 nights, then turns the
schedule off so that no real night starts while the other tests run (a CI run may cross 02:00 Berlin). The
catch-up test comes next: a later run of the deployment (the review nights) would supersede its nights.
"""

from __future__ import annotations

import getpass
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from prefect_api import PROJECT, TERMINAL, api, cli, scheduled_runs, task_names, wait_state

from flows.review import deadline_key
from lmforge_core.metadata import repository as repo
from lmforge_core.metadata import review_repository as reviews
from lmforge_core.metadata.models import (
    Deployment,
    ModelStatus,
    ModelVersion,
    ReviewRequest,
    ReviewRequestStatus,
    RunStatus,
    TrainingRun,
)
from lmforge_core.processes import pid_alive
from lmforge_core.runtime import Runtime
from tasks.publish.publish import repository_path

NIGHTLY = "nightly-retrain/nightly"

pytestmark = pytest.mark.slow


@dataclass
class DeployedNightly:
    api_url: str
    env: dict[str, str]  # what `lmforge` needs: the server, this module's configuration
    config: Path  # the worker's configuration: review required, Europe/Berlin
    deployed: dict[str, Any]  # what `lmforge deploy` printed
    worker_log: Path
    server_log: Path

    def completed(self, flow_run_id: str, timeout: float = 900) -> dict[str, Any]:
        run = wait_state(self.api_url, flow_run_id, TERMINAL, timeout)
        if run["state"]["type"] != "COMPLETED":  # printed in full: an assertion's repr is cut short
            print(run["state"]["message"], self.worker_log.read_text()[-5000:], sep="\n")
        assert run["state"]["type"] == "COMPLETED"
        return run

    def suspended(self, flow_run_id: str) -> dict[str, Any]:
        """The run once suspended for review, after its process (the worker's child) has exited."""
        run = wait_state(self.api_url, flow_run_id, {"PAUSED"} | TERMINAL, timeout=900)
        assert (run["state"]["type"], run["state"]["name"]) == ("PAUSED", "Suspended"), run["state"]
        pid = int(run["infrastructure_pid"])
        deadline = time.monotonic() + 60
        while pid_alive(pid) and _state_of(pid) != "Z" and time.monotonic() < deadline:
            time.sleep(1)
        assert not pid_alive(pid) or _state_of(pid) == "Z", f"the suspended run's process {pid} still runs"
        return run


def _state_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


@pytest.fixture(scope="module")
def nightly(prefect_server, module_night_config: Callable[..., Path],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeployedNightly]:
    """prefect.yaml's deployments registered by `lmforge deploy`, and one worker (one run at a time)."""
    config = module_night_config(orchestration={"timezone": "Europe/Berlin",
                                                "review": {"required": True, "timeout_s": 1800}})
    env = prefect_server.env | {"LMFORGE_CONFIG": str(config), "PYTHONPATH": str(PROJECT),
                                "PREFECT_WORKER_QUERY_SECONDS": "2"}
    deployed = cli(env, "deploy")
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", "lmforge-process",
                                   "--type", "process", "--limit", "1"], cwd=PROJECT, env=env, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield DeployedNightly(prefect_server.api_url, env, config, deployed, log, prefect_server.log)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()


def _missed_nights(nightly: DeployedNightly, config: Path, source: Path) -> tuple[str, str]:
    """Two nights of the nightly deployment that should have run (yesterday's and today's), both late."""
    deployment = api(nightly.api_url, f"/deployments/name/{NIGHTLY}")
    now = datetime.now(UTC)
    ids = []
    for due in (now - timedelta(days=1), now - timedelta(minutes=1)):
        run = api(nightly.api_url, f"/deployments/{deployment['id']}/create_flow_run", {
            "parameters": {"source": str(source), "config": str(config)},
            "state": {"type": "SCHEDULED", "state_details": {"scheduled_time": due.isoformat()}}})
        ids.append(run["id"])
    return ids[0], ids[1]


def _superseded_events(rt: Runtime) -> list[dict[str, Any]]:
    with rt.metadata.session() as session:
        return [{"target": e.target, **e.details} for e in reviews.audit_events(session)
                if e.action == "night.superseded"]


def test_the_deployed_02_00_schedule_creates_the_nights_it_will_run(nightly) -> None:
    # issue 21: with SQLAlchemy 2.1 Prefect 3.8.8's scheduler failed on every loop ("Can't evaluate bulk DML
    # statement"): the schedule showed active and no night was ever scheduled.
    deployment = api(nightly.api_url, f"/deployments/name/{NIGHTLY}")
    (schedule,) = deployment["schedules"]
    assert schedule["active"]
    started = datetime.now(UTC)
    runs = scheduled_runs(nightly.api_url, deployment["id"], timeout=120)
    server_log = nightly.server_log.read_text(errors="replace")
    assert runs, f"no night scheduled within {(datetime.now(UTC) - started).seconds} s: {server_log[-3000:]}"
    berlin = ZoneInfo("Europe/Berlin")
    starts = sorted(datetime.fromisoformat(r["expected_start_time"]).astimezone(berlin) for r in runs)
    assert all((s.hour, s.minute) == (2, 0) for s in starts), starts
    assert starts[0] - started < timedelta(days=1, minutes=1), starts  # the next 02:00 is among them
    assert "Can't evaluate bulk DML" not in server_log

    # no real night (the next sample drop) may start in this module's workspace while the tests run
    api(nightly.api_url, f"/deployments/{deployment['id']}/schedules/{schedule['id']}", {"active": False},
        method="PATCH")
    deadline = time.monotonic() + 30
    while scheduled_runs(nightly.api_url, deployment["id"], timeout=0) and time.monotonic() < deadline:
        time.sleep(1)
    assert scheduled_runs(nightly.api_url, deployment["id"], timeout=0) == []


def test_missed_nights_run_only_the_latest_and_all_of_them_when_configured(
        nightly, night_config, open_config, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()  # nothing to ingest: a night that runs ends "nothing new" in seconds
    latest, every = night_config(), night_config(orchestration={"catchup": "all"})

    earlier, later = _missed_nights(nightly, latest, tmp_path / "empty")
    for run_id in (earlier, later):
        nightly.completed(run_id, timeout=300)
    assert task_names(nightly.api_url, earlier) == {"catch-up-policy"}  # ended before ingesting
    assert "ingest-night" in task_names(nightly.api_url, later)
    (event,) = _superseded_events(open_config(latest))
    assert (event["target"], event["superseded_by"], event["policy"]) == (f"flow run {earlier}", later, "latest")

    runs = _missed_nights(nightly, every, tmp_path / "empty")
    for run_id in runs:
        nightly.completed(run_id, timeout=300)
        assert "ingest-night" in task_names(nightly.api_url, run_id)
    assert _superseded_events(open_config(every)) == []


def _pending_request(rt: Runtime, flow_run_id: str) -> tuple[int, int, str]:
    """(request id, model version id, model label) of the review the flow run waits for."""
    with rt.metadata.session() as session:
        (request,) = [r for r in reviews.pending_review_requests(session) if r.flow_run_id == flow_run_id]
        return request.id, request.model_version_id, session.get(ModelVersion, request.model_version_id).label


def test_a_deployed_night_suspends_for_review_and_the_cli_approval_resumes_and_publishes_it(
        nightly, open_config, prose_source) -> None:
    assert nightly.deployed["deployments"] == ["nightly", "ingest", "evaluate", "publish", "review-deadline"]
    deployment = api(nightly.api_url, f"/deployments/name/{NIGHTLY}")
    (schedule,) = deployment["schedules"]
    assert (schedule["schedule"]["cron"], schedule["schedule"]["timezone"]) == ("0 2 * * *", "Europe/Berlin")
    assert deployment["work_pool_name"] == "lmforge-process"

    source = prose_source()
    first = cli(nightly.env, "trigger", "--source", source)
    again = cli(nightly.env, "trigger", "--source", source)
    assert again["flow_run_id"] == first["flow_run_id"]  # same snapshot: the run already started
    run = nightly.suspended(first["flow_run_id"])
    assert run["idempotency_key"] == f"{NIGHTLY}:{first['snapshot']}"

    rt = open_config(nightly.config)
    request_id, model_id, label = _pending_request(rt, first["flow_run_id"])
    approved = cli(nightly.env, "review", "approve", label, "--comment", "reads well on the new documents")
    assert approved["resumed"] and approved["request_id"] == request_id
    nightly.completed(first["flow_run_id"])

    with rt.metadata.session() as session:
        (trained,) = session.query(TrainingRun).all()  # the resumed run trained nothing again
        assert trained.status is RunStatus.SUCCEEDED
        assert [d.model_version_id for d in session.query(Deployment)] == [model_id]
        assert repo.get_alias(session, rt.settings.model_name, rt.settings.serving.alias).id == model_id
        (review,) = repo.reviews_for(session, model_id)  # recorded by the CLI, not again by the flow
        assert (review.reviewer, review.comment) == (getpass.getuser(), "reads well on the new documents")
        assert session.get(ReviewRequest, request_id).status is ReviewRequestStatus.APPROVED
        assert [e.source for e in reviews.audit_events(session) if e.action == "review.approve"] == ["cli"]


def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()} if folder.exists() else {}


def test_a_deployed_night_rejected_with_the_cli_publishes_nothing(nightly, open_config, prose_source) -> None:
    rt = open_config(nightly.config)
    served = _tree(repository_path(rt))
    with rt.metadata.session() as session:
        deployments = session.query(Deployment).count()

    night = cli(nightly.env, "trigger", "--source", prose_source("later", start=500))
    nightly.suspended(night["flow_run_id"])
    request_id, model_id, label = _pending_request(rt, night["flow_run_id"])
    rejected = cli(nightly.env, "review", "reject", label, "--comment", "drifts off topic")
    assert rejected["resumed"]
    nightly.completed(night["flow_run_id"])

    assert _tree(repository_path(rt)) == served  # not a file added, changed or removed
    with rt.metadata.session() as session:
        assert session.query(Deployment).count() == deployments
        assert session.get(ReviewRequest, request_id).status is ReviewRequestStatus.REJECTED
        assert session.get(ModelVersion, model_id).status is ModelStatus.REJECTED


def test_a_deployed_night_nobody_reviews_gets_the_configured_default_at_its_deadline_and_publishes(
        nightly, module_night_config, open_config, prose_source) -> None:
    # a suspended run has no process to time out in: the review-deadline run it scheduled applies the default
    config = module_night_config(orchestration={"timezone": "Europe/Berlin", "review": {
        "required": True, "timeout_s": 15, "default": "approve"}})
    deployment = api(nightly.api_url, f"/deployments/name/{NIGHTLY}")
    night = api(nightly.api_url, f"/deployments/{deployment['id']}/create_flow_run", {
        "parameters": {"source": prose_source("unreviewed", start=900), "config": str(config)}})
    night["flow_run_id"] = night["id"]
    nightly.suspended(night["flow_run_id"])
    nightly.completed(night["flow_run_id"])

    rt = open_config(config)
    with rt.metadata.session() as session:
        (request,) = session.query(ReviewRequest).all()
        assert request.flow_run_id == night["flow_run_id"] and request.status is ReviewRequestStatus.TIMED_OUT
        (review,) = repo.reviews_for(session, request.model_version_id)
        assert (review.reviewer, review.decision.value) == ("lmforge:timeout", "approve")
        assert "within 15 s" in review.comment
        assert [d.model_version_id for d in session.query(Deployment)] == [request.model_version_id]
        actions = [e.action for e in reviews.audit_events(session)]
        assert actions.count("review.timeout.approve") == 1 and "review.approve" not in actions  # recorded once
    runs = api(nightly.api_url, "/flow_runs/filter", {"flow_runs": {"idempotency_key": {
        "any_": [deadline_key(night["flow_run_id"], request.id)]}}})
    assert [r["state"]["type"] for r in runs] == ["COMPLETED"]  # one deadline run, though the night ran twice
