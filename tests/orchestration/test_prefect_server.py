"""End to end on a real Prefect server: `prefect server start` on the local PostgreSQL (a database of its
own), a process work-pool worker, the deployments of prefect.yaml registered by `lmforge deploy`, the
nightly deployment triggered twice with the same data snapshot (one run), and that run completing."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from lmforge_core.metadata.models import Deployment, ModelVersion, RunStatus, TrainingRun

PROJECT = Path(__file__).resolve().parents[2]
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _cli(env: dict[str, str], *args: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "flows.cli", *args, "--json"], cwd=PROJECT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def _get(api_url: str, path: str) -> Any:
    with urllib.request.urlopen(f"{api_url}{path}", timeout=10) as response:
        return json.loads(response.read())


def _wait_terminal(api_url: str, flow_run_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = _get(api_url, f"/flow_runs/{flow_run_id}")
        if run["state"] and run["state"]["type"] in TERMINAL:
            return run
        time.sleep(3)
    raise AssertionError(f"flow run {flow_run_id} did not finish within {timeout:.0f} s: {run['state']}")


@pytest.mark.slow
def test_the_nightly_deployment_runs_on_a_prefect_server_backed_by_postgresql(
        prefect_server, night_config, open_config, prose_source, tmp_path: Path) -> None:
    config = night_config(orchestration={"timezone": "Europe/Berlin"})
    env = prefect_server.env | {"LMFORGE_CONFIG": str(config), "PYTHONPATH": str(PROJECT)}
    deployed = _cli(env, "deploy")
    assert deployed["deployments"] == ["nightly", "ingest", "evaluate", "publish"]
    nightly = _get(prefect_server.api_url, "/deployments/name/nightly-retrain/nightly")
    (schedule,) = nightly["schedules"]
    assert (schedule["schedule"]["cron"], schedule["schedule"]["timezone"]) == ("0 2 * * *", "Europe/Berlin")
    assert nightly["work_pool_name"] == "lmforge-process"

    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", "lmforge-process",
                                   "--type", "process", "--limit", "1"], cwd=PROJECT, env=env, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        source = prose_source()
        first = _cli(env, "trigger", "--source", source)
        again = _cli(env, "trigger", "--source", source)
        assert again["flow_run_id"] == first["flow_run_id"]  # same snapshot: the run already started

        run = _wait_terminal(prefect_server.api_url, first["flow_run_id"], timeout=900)
        if run["state"]["type"] != "COMPLETED":  # printed in full: an assertion's repr is cut short
            print(run["state"]["message"], log.read_text()[-5000:], sep="\n")
        assert run["state"]["type"] == "COMPLETED"
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
    with open_config(config).metadata.session() as session:
        (trained,) = session.query(TrainingRun).all()
        assert trained.status is RunStatus.SUCCEEDED
        (model,) = session.query(ModelVersion).all()
        assert [d.model_version_id for d in session.query(Deployment)] == [model.id]
