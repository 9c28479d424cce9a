"""`lmforge nightly` as a person runs it: a real subprocess, killed for real (issue 21, points 0, 1 and 12).

- `kill -9` of a night during its training: its temporary Prefect server dies with it, and the rerun neither
  waits for the dead night's slot of the training limit nor ingests the next drop first: it resumes the
  killed training of its dataset version and takes it through to publishing, with no ERROR or traceback in
  its output;
- an unattended review on a real Prefect server times out into its default (approve), and the night that
  publishes reads Completed in Prefect throughout, never Failed ("paused and never resumed").
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prefect_api import PROJECT, api

from lmforge_core.metadata import repository as repo
from lmforge_core.metadata.models import DatasetVersion, ModelVersion, ReviewRequest, RunStatus, TrainingRun
from lmforge_core.runtime import Runtime

pytestmark = pytest.mark.slow

SERVER = b"prefect.server.api.server:create_app"
DISTRIBUTED_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _env(config: Path, home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """`lmforge` with this configuration, no Prefect server named (unless ``extra`` names one) and a Prefect
    home of its own. Not this process's torch.distributed variables: a training earlier in the session made
    it a world of one (RANK, MASTER_PORT ... set, the port held)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "LMFORGE_")) and k not in DISTRIBUTED_VARS}
    return env | {"LMFORGE_CONFIG": str(config), "PYTHONPATH": str(PROJECT), "PREFECT_HOME": str(home)} | (extra or {})


def _nightly(*args: str) -> list[str]:
    return [sys.executable, "-m", "flows.cli", "nightly", *args, "--json"]


def _children(pid: int) -> dict[int, bytes]:
    """The child processes of ``pid`` (any of its threads') with their command lines."""
    found: dict[int, bytes] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            for child in (task / "children").read_text().split():
                found[int(child)] = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
    return found


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its parent to collect it does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _training_checkpointed(rt: Runtime) -> TrainingRun | None:
    with rt.metadata.session() as session:
        run = session.query(TrainingRun).order_by(TrainingRun.id).first()
        if run is not None and run.status is RunStatus.RUNNING and repo.latest_checkpoint(session, run.id):
            session.expunge(run)
            return run
    return None


def _clean(output: str) -> None:
    """A successful night prints no ERROR and no traceback (issue 21: the promote task's cache key hashed a
    MetadataStore, logging an ERROR with a traceback in every published night)."""
    bad = [line for line in output.splitlines() if "ERROR" in line or "Traceback" in line]
    assert not bad, "\n".join(bad[:20]) + "\n---\n" + output[-5000:]


def test_a_night_killed_during_training_leaves_nothing_behind_and_the_rerun_resumes_it_first(
        night_config: Callable[..., Path], open_config: Callable[[Path], Runtime], shard_writer,
        tmp_path: Path) -> None:
    source = shard_writer(tmp_path / "drops", "part-00000.jsonl", range(40))
    # a lease of 60 s (Prefect's shortest): the killed night's slot is free at most a minute after the kill
    config = night_config(train={"steps": 60, "checkpoint_every": 2},
                          orchestration={"training_lease_s": 60, "training_slot_timeout_s": 400})
    env = _env(config, tmp_path / "prefect-home")
    rt = open_config(config)
    log = tmp_path / "killed-night.log"
    with open(log, "wb") as out:
        night = subprocess.Popen(_nightly("--source", str(source)), cwd=PROJECT, env=env, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, killed = time.monotonic() + 600, None
        while killed is None and time.monotonic() < deadline and night.poll() is None:
            killed = _training_checkpointed(rt)
            time.sleep(0.2)
        assert killed is not None, f"no checkpoint before the night ended: {log.read_text()[-5000:]}"
        servers = [pid for pid, cmd in _children(night.pid).items() if SERVER in cmd]
        assert len(servers) == 1, _children(night.pid)
        os.kill(night.pid, signal.SIGKILL)  # the night only, as `kill -9 PID` does
        night.wait()
    finally:
        if night.poll() is None:
            os.killpg(night.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while _running(servers[0]) and time.monotonic() < deadline:
        time.sleep(0.5)
    alive = _running(servers[0])
    if alive:
        os.kill(servers[0], signal.SIGKILL)
    assert not alive, "the killed night's temporary Prefect server outlived it"
    with sqlite3.connect(rt.settings.workspace / "prefect.db") as db:  # the dead night's slot is still taken
        assert db.execute("SELECT active_slots FROM concurrency_limit_v2 WHERE name = 'lmforge-training'"
                          ).fetchall() == [(1,)]

    shard_writer(source, "part-00001.jsonl", range(1000, 1040))  # the next drop arrives
    started = time.monotonic()
    try:
        rerun = subprocess.run(_nightly("--source", str(source)), cwd=PROJECT, env=env, capture_output=True,
                               text=True, timeout=600)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the rerun did not finish in 600 s: {(exc.stderr or b'')[-5000:]!r}") from None
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-5000:]
    (night_summary,) = json.loads(rerun.stdout)["nights"]
    assert night_summary["status"] == "published", night_summary
    assert night_summary["resumed_training"] == {"dataset_version": "ds-000001", "run_id": killed.run_id,
                                                 "was": "running"}
    assert "ingest" not in night_summary  # the next drop waits for the next night
    _clean(rerun.stdout + rerun.stderr)
    waited = [line for line in rerun.stderr.splitlines() if "holding 'lmforge-training' after" in line]
    assert waited, rerun.stderr[-5000:]

    with rt.metadata.session() as session:
        first, second = session.query(TrainingRun).order_by(TrainingRun.id).all()
        assert first.run_id == killed.run_id and first.status is RunStatus.INTERRUPTED
        assert "ended without recording how" in first.error
        assert second.resumed_from_id == first.id and second.status is RunStatus.SUCCEEDED
        assert session.query(DatasetVersion).count() == 1
        assert [m.training_run_id for m in session.query(ModelVersion)] == [second.id]
    with sqlite3.connect(rt.settings.workspace / "prefect.db") as db:
        assert db.execute("SELECT active_slots FROM concurrency_limit_v2 WHERE name = 'lmforge-training'"
                          ).fetchall() == [(0,)]
    assert time.monotonic() - started < 600


def _state_types(api_url: str, flow_run_id: str) -> list[str]:
    return [s["type"] for s in api(api_url, f"/flow_run_states/?flow_run_id={flow_run_id}")]


def test_an_unattended_review_on_a_real_server_times_out_into_its_default_and_the_night_reads_completed(
        prefect_server, night_config: Callable[..., Path], open_config: Callable[[Path], Runtime],
        prose_source: Callable[..., str], tmp_path: Path) -> None:
    config = night_config(orchestration={"review": {"required": True, "timeout_s": 10, "poll_interval_s": 1,
                                                    "default": "approve"}})
    env = _env(config, tmp_path / "prefect-home", {"PREFECT_API_URL": prefect_server.api_url})
    env |= {k: v for k, v in prefect_server.env.items() if k == "PREFECT_SERVER_ANALYTICS_ENABLED"}
    states: list[list[str]] = []
    night = subprocess.Popen(_nightly("--source", prose_source()), cwd=PROJECT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        rt = open_config(config)
        deadline, flow_run_id = time.monotonic() + 900, None
        while night.poll() is None and time.monotonic() < deadline:  # Prefect's view while the night runs
            if flow_run_id is None:
                with rt.metadata.session() as session:
                    request = session.query(ReviewRequest).first()
                    flow_run_id = request.flow_run_id if request is not None else None
            if flow_run_id is not None:
                states.append(_state_types(prefect_server.api_url, flow_run_id))
            time.sleep(1)
        out, err = night.communicate(timeout=60)
    finally:
        if night.poll() is None:
            night.kill()
    assert night.returncode == 0, out[-3000:] + err[-5000:]
    (summary,) = json.loads(out)["nights"]
    assert summary["status"] == "published", summary
    assert summary["review"]["timed_out"] is True and summary["review"]["reviewer"] == "lmforge:timeout"
    assert summary["flow_run_id"] == flow_run_id
    history = _state_types(prefect_server.api_url, flow_run_id)
    assert "PAUSED" in history and history[-1] == "COMPLETED", history
    seen = {t for snapshot in states for t in snapshot} | set(history)
    assert "FAILED" not in seen, (history, err[-3000:])
    _clean(out + err)
