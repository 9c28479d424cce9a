"""Failure behaviour of the nightly flow on Prefect's test harness with the real stores (issue 13, point 6).

Each test runs the real flows (``flows.nightly``, ``flows.ingest``, ``flows.train``) in this process against
the session's temporary Prefect API; nothing of the project is mocked.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest
from moto.server import ThreadedMotoServer
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.concurrency.sync import concurrency

from flows.ingest import ingest
from flows.nightly import nightly_retrain
from flows.steps import QualityGateFailed
from flows.support import ensure_training_limit
from flows.train import train
from lmforge_core.config.orchestration import OrchestrationConfig
from lmforge_core.metadata import repository as repo
from lmforge_core.metadata.models import BatchStatus, ModelVersion, RunStatus, TrainingRun
from lmforge_core.settings import load_settings
from tasks.train.task import TrainingSlotTimeout


def _task_runs(flow_run_id: str, name: str) -> list:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return [r for r in runs if r.name.startswith(name)]


def test_a_failing_quality_gate_fails_the_night_naming_the_expectations_and_trains_nothing(
        prefect_harness, night_config, open_config, shard_writer, tmp_path: Path) -> None:
    source = tmp_path / "bad"
    shard_writer(source, "good.jsonl", range(20))
    (source / "tiny.jsonl").write_text("".join(json.dumps({"text": f"tiny record {i}"}) + "\n" for i in range(12)))
    config = night_config(data={"gate": {"max_reject_rate": 0.3}})

    state = nightly_retrain(source=str(source), config=str(config), return_state=True)

    assert state.is_failed()
    with pytest.raises(QualityGateFailed, match=r"quarantined: .*expect_column_values_to_be_between\(reject_rate\)"):
        state.result()
    rt = open_config(config)
    with rt.metadata.session() as session:
        assert [b.status for b in repo.list_batches(session)] == [BatchStatus.QUARANTINED]
        assert session.query(TrainingRun).count() == 0
        assert session.query(ModelVersion).count() == 0


def test_an_s3_outage_is_retried_then_fails_clearly_with_no_model_version(
        prefect_harness, night_config, open_config, prose_source) -> None:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ.update(AWS_ENDPOINT_URL=f"http://{host}:{port}", AWS_ACCESS_KEY_ID="lmforge-test",
                      AWS_SECRET_ACCESS_KEY="lmforge-test-secret")  # moto accepts any key; not a credential
    try:
        import boto3

        boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1").create_bucket(Bucket="lmf-outage")
        config = night_config(artifact_uri="s3://lmf-outage/night")
        assert ingest(source=prose_source(), config=str(config))["status"] == "accepted"
        server.stop()  # the artifact store goes away between the nights' steps

        state = train(config=str(config), return_state=True)

        assert state.is_failed()
        with pytest.raises(Exception, match=r"lmf-outage|S3|endpoint|connect") as failure:
            state.result()
        assert "Traceback" not in str(failure.value)
        attempts = _task_runs(str(state.state_details.flow_run_id), "train-dataset")
        assert [r.run_count for r in attempts] == [3]  # the first attempt and both retries
        rt = open_config(config)
        with rt.metadata.session() as session:
            assert session.query(ModelVersion).count() == 0
            assert all(r.status is RunStatus.FAILED for r in session.query(TrainingRun))
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


def test_two_trainings_started_together_never_overlap(prefect_harness, night_config, open_config,
                                                      prose_source) -> None:
    configs = [night_config(), night_config()]
    for n, config in enumerate(configs):
        assert ingest(source=prose_source(f"src{n}", start=100 * n), config=str(config))["status"] == "accepted"
    results: dict[int, object] = {}

    def run(n: int) -> None:
        results[n] = train(config=str(configs[n]), return_state=True)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)

    assert all(results[n].is_completed() for n in range(2)), results
    spans = []
    for config in configs:
        with open_config(config).metadata.session() as session:
            (run,) = session.query(TrainingRun).all()
            assert run.status is RunStatus.SUCCEEDED
            spans.append((run.started_at, run.ended_at))
    first, second = sorted(spans)
    assert first[1] <= second[0], f"trainings overlapped: {spans}"


def test_a_training_whose_slot_never_frees_fails_at_its_deadline_naming_the_limit(
        prefect_harness, night_config, open_config, prose_source) -> None:
    # issue 21: the wait for the slot had no deadline, so a slot nobody freed held every later night forever
    assert OrchestrationConfig().training_slot_timeout_s == 6 * 3600
    limit = f"lmforge-training-{uuid.uuid4().hex[:8]}"  # this test's own limit: the session's server is shared
    config = night_config(orchestration={"training_limit": limit, "training_slot_timeout_s": 3})
    assert ingest(source=prose_source(), config=str(config))["status"] == "accepted"
    ensure_training_limit(load_settings(config).orchestration)

    with concurrency(limit, occupy=1, strict=True):  # another training holds the only slot throughout
        state = train(config=str(config), return_state=True)

    assert state.is_failed()
    with pytest.raises(TrainingSlotTimeout, match=rf"no slot of concurrency limit '{limit}' became free within 3 s"):
        state.result()
    attempts = _task_runs(str(state.state_details.flow_run_id), "train-dataset")
    assert [r.run_count for r in attempts] == [1]  # the wait was the retry: not waited for again
    with open_config(config).metadata.session() as session:
        assert session.query(TrainingRun).count() == 0


def _launcher_pids(run_dir: Path) -> list[int]:
    """Processes of this test's training launch (their command line names the run's job file)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "model.launch" in cmdline and str(run_dir) in cmdline:
            pids.append(int(entry.name))
    return pids


@pytest.mark.slow
def test_a_killed_training_process_is_retried_and_resumes_from_its_checkpoint(
        prefect_harness, night_config, open_config, prose_source) -> None:
    config = night_config(train={"processes": 2, "steps": 40, "checkpoint_every": 4})
    assert ingest(source=prose_source(count=40), config=str(config))["status"] == "accepted"
    rt = open_config(config)
    killed: list[int] = []

    def kill_after_first_checkpoint() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed:
            with rt.metadata.session() as session:
                run = session.query(TrainingRun).order_by(TrainingRun.id).first()
                if run is not None and repo.latest_checkpoint(session, run.id) is not None:
                    for pid in _launcher_pids(rt.settings.workspace / "runs" / run.run_id):
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
            time.sleep(0.2)

    killer = threading.Thread(target=kill_after_first_checkpoint)
    killer.start()
    state = train(config=str(config), return_state=True)
    killer.join()

    assert killed, "the training processes were not found to kill"
    assert state.is_completed(), state
    with rt.metadata.session() as session:
        first, second = session.query(TrainingRun).order_by(TrainingRun.id).all()
        assert first.status is RunStatus.FAILED and "exited with code" in (first.error or "")
        assert second.resumed_from_id == first.id and second.status is RunStatus.SUCCEEDED
        assert "resumed" in second.config["source"]
        assert [m.training_run_id for m in session.query(ModelVersion)] == [second.id]
    attempts = _task_runs(str(state.state_details.flow_run_id), "train-dataset")
    assert [r.run_count for r in attempts] == [2]
    assert any(line.startswith("[launcher] ") for line in _flow_log(str(state.state_details.flow_run_id)))


def _flow_log(flow_run_id: str, wait_s: float = 30) -> list[str]:
    """The messages Prefect recorded for a flow run (log batches arrive a little after the run ends)."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    deadline = time.monotonic() + wait_s
    while True:
        with get_client(sync_client=True) as client:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        messages = [entry.message for entry in logs]
        if any(m.startswith("[launcher] ") for m in messages) or time.monotonic() > deadline:
            return messages
        time.sleep(1)
