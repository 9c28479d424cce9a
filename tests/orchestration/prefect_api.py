"""What the tests on the real Prefect server share: the `lmforge` CLI as a subprocess, the server's REST API,
and waiting for a flow run's state."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[2]
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def cli(env: dict[str, str], *args: str) -> dict[str, Any]:
    """`lmforge ARGS --json` in a subprocess with ``env``; its JSON output (a failure shows its output)."""
    done = subprocess.run([sys.executable, "-m", "flows.cli", *args, "--json"], cwd=PROJECT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def api(api_url: str, path: str, body: dict[str, Any] | None = None, method: str | None = None) -> Any:
    """GET ``path`` (POST ``body`` when given, or ``method``) on the server's REST API; None for no content."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{api_url}{path}", data=data, headers={"Content-Type": "application/json"},
                                     method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        content = response.read()
    return json.loads(content) if content else None


def wait_for(api_url: str, path: str, timeout: float) -> Any:
    """``api(path)`` once it stops answering 404 (an object another process is about to create)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return api(api_url, path)
        except urllib.error.HTTPError as exc:
            if exc.code != 404 or time.monotonic() > deadline:
                raise
        time.sleep(1)


def wait_state(api_url: str, flow_run_id: str, types: set[str], timeout: float) -> dict[str, Any]:
    """The flow run once its state type is one of ``types``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = api(api_url, f"/flow_runs/{flow_run_id}")
        if run["state"] and run["state"]["type"] in types:
            return run
        time.sleep(2)
    raise AssertionError(f"flow run {flow_run_id} did not reach {types} within {timeout:.0f} s: {run['state']}")


def scheduled_runs(api_url: str, deployment_id: str, timeout: float) -> list[dict[str, Any]]:
    """The deployment's SCHEDULED flow runs due after now, once its schedule has created any (Prefect's
    scheduler service does, every PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS)."""
    deadline = time.monotonic() + timeout
    while True:
        now = datetime.now(UTC).isoformat()
        runs = api(api_url, "/flow_runs/filter", {
            "deployments": {"id": {"any_": [deployment_id]}},
            "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}, "expected_start_time": {"after_": now}}})
        if runs or time.monotonic() > deadline:
            return runs
        time.sleep(2)


def task_names(api_url: str, flow_run_id: str) -> set[str]:
    """The names of the tasks a flow run ran (without Prefect's per-call suffix)."""
    runs = api(api_url, "/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}})
    return {run["name"].rsplit("-", 1)[0] for run in runs}  # "ingest-night-a1b" -> "ingest-night"
