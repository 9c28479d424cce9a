"""The temporary Prefect API of ``lmforge nightly`` when no ``PREFECT_API_URL`` names a server: one per
``lmforge nightly`` process, on the workspace's own database, gone when that process is gone.

Prefect's own temporary server (the one a flow starts when no API is configured) is not used, for three
reasons found by killing a night with ``kill -9`` during its training (issue 21):

- it outlived the killed process (nothing stops it when its parent cannot clean up): this one is started
  so that Linux kills it when the ``lmforge nightly`` process ends, however it ends
  (:func:`lmforge_core.processes.dying_with_parent`);
- it keeps the leases of the training concurrency limit in memory, so a slot held by a killed night stayed
  taken in the workspace's database for good: this one keeps them in files in the workspace
  (``<workspace>/prefect-home/concurrency_leases``), so the next server of the workspace knows them;
- it runs as an "ephemeral" server, without Prefect's repossessor service, which releases the slots of a
  lease nobody renewed (its holder died): this one runs it (every few seconds), so a killed night's slot is
  free again at most one lease duration (``orchestration.training_lease_s``) after the kill.

Flows tell it from a server other processes can reach with :func:`is_temporary_api` (a review then waits on
the metadata store, where ``lmforge review`` records decisions; see flows/review.py).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import prefect
from prefect.settings import get_current_settings

from lmforge_core.processes import dying_with_parent

LEASE_STORAGE = "prefect.server.concurrency.lease_storage.filesystem"
_current: str | None = None  # the API URL of the temporary server this process runs, while it runs


def is_temporary_api(api_url: str | None) -> bool:
    """Whether ``api_url`` is this process's temporary server (no other process knows its address)."""
    return api_url is not None and api_url == _current


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_environment(workspace: Path, database_url: str) -> dict[str, str]:
    """The server's settings: this process's Prefect settings, the workspace's database and lease files, and
    only the services a night needs (the repossessor, often)."""
    env = dict(os.environ) | get_current_settings().to_environment_variables(exclude_unset=True)
    env.pop("PREFECT_API_URL", None)
    return env | {
        "PREFECT_HOME": str(workspace / "prefect-home"),  # the lease files live under it
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": database_url,
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": LEASE_STORAGE,
        "PREFECT_SERVER_SERVICES_REPOSSESSOR_ENABLED": "true",
        "PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS": "5",
        # a night waiting for the training slot asks again after at most 5 s (Prefect's default: 30 s).
        "PREFECT_SERVER_CONCURRENCY_MAXIMUM_CONCURRENCY_SLOT_WAIT_SECONDS": "5",
        # nothing is deployed on this server: no scheduler, no late-run or pause-expiry service, no UI.
        "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_FOREMAN_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_PAUSE_EXPIRATIONS_ENABLED": "false",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT__SERVER_FINAL": "1",
    }


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the temporary Prefect server exited with code {proc.returncode}: "
                               f"{log.read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:  # noqa: S310 (loopback URL)
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the temporary Prefect server did not answer within {timeout:.0f} s (log {log})")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _drain_prefect_workers() -> None:
    """Send the logs and events this process still holds before their server goes (else they fail later)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        try:
            worker.drain_all(timeout=15)
        except Exception:  # noqa: S110 (nothing left to send, or the worker never started)
            pass


@contextmanager
def temporary_server(workspace: Path, database_url: str, startup_timeout: float = 120) -> Iterator[str]:
    """Start the workspace's temporary Prefect server; yields its API URL; stops it on the way out (and Linux
    kills it if this process is killed first)."""
    global _current
    port = _free_port()
    log = workspace / "prefect-server.log"
    argv = [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(prefect.__module_path__).parent), "--factory",
            "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "error", "--lifespan", "on"]
    with open(log, "ab") as out:
        # its own session: a Ctrl-C in the terminal reaches the night, which then still reports to its server.
        proc = subprocess.Popen(dying_with_parent(argv, signal.SIGKILL), env=server_environment(workspace, database_url),
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        _wait_healthy(url, proc, log, startup_timeout)
        _current = url
        yield url
    finally:
        if _current is not None:
            _drain_prefect_workers()
        _current = None
        _stop(proc)
