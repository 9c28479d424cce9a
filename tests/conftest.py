"""Shared fixtures: a real PostgreSQL database per session, a real S3 endpoint (moto's server), workspaces.

PostgreSQL: 127.0.0.1:5432 (trust auth) on the development and CI machines. A service the suite needs and
cannot find (PostgreSQL, checkov, ...) fails its tests, unless the person running them opts out with
LMFORGE_TEST_ALLOW_SKIPS=1: then those tests skip with the reason, shown in the summary (`-ra`).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import psycopg
import pytest
from moto.server import ThreadedMotoServer
from services import missing_service

from lmforge_core.runtime import Runtime, open_runtime
from lmforge_core.settings import Settings, load_settings

PG_ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"


@pytest.fixture(autouse=True)
def _isolated_from_the_developers_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may pick up a developer's LMFORGE_* variables (e.g. a real database URL)."""
    for name in [n for n in os.environ if n.startswith("LMFORGE_")]:
        monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a fresh PostgreSQL database created for this test session and dropped after it."""
    try:
        admin = psycopg.connect(PG_ADMIN_DSN, autocommit=True)
    except psycopg.OperationalError as exc:
        missing_service(f"PostgreSQL at 127.0.0.1:5432 is not answering ({str(exc).strip().splitlines()[0]})")
    name = f"lmforge_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def fresh_postgres_url(postgres_url: str) -> Iterator[str]:
    """An empty database of its own for one test (schema tests need a blank slate)."""
    name = f"lmforge_t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class S3Endpoint:
    url: str

    def client(self):  # type: ignore[no-untyped-def]
        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1")

    def new_bucket(self) -> str:
        name = f"lmf-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Endpoint]:
    """moto's standalone S3 server on a free loopback port; boto3 reaches it via AWS_ENDPOINT_URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                             "AWS_DEFAULT_REGION")}
    os.environ.update(
        AWS_ENDPOINT_URL=url,
        AWS_ACCESS_KEY_ID="lmforge-test",
        AWS_SECRET_ACCESS_KEY="lmforge-test-secret",  # moto accepts any key; not a credential
        AWS_DEFAULT_REGION="us-east-1",
    )
    try:
        yield S3Endpoint(url)
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def s3_bucket(s3_server: S3Endpoint) -> str:
    """A new empty bucket on the moto server."""
    return s3_server.new_bucket()


@pytest.fixture
def workspace_settings(tmp_path: Path) -> Settings:
    """Embedded-default settings (SQLite + local artifacts) in a temporary workspace."""
    return load_settings(workspace=tmp_path / "ws")


@pytest.fixture
def runtime(workspace_settings: Settings) -> Iterator[Runtime]:
    rt = open_runtime(workspace_settings)
    yield rt
    rt.metadata.dispose()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``gpu``-marked tests skip cleanly (with the reason) where no CUDA GPU is visible."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none is visible on this machine")
    for item in gpu_items:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One temporary Prefect API (server and SQLite database) for every test that runs flows, started once
    per session (15-30 s on a loaded machine); persisted task results go to a session folder."""
    from prefect.settings import (
        PREFECT_LOCAL_STORAGE_PATH,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )
    from prefect.testing.utilities import prefect_test_harness

    storage = tmp_path_factory.mktemp("prefect-results")
    with temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: str(storage),
                                     PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 180}):
        with prefect_test_harness(server_startup_timeout=180):
            yield


DISTRIBUTED_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass
class PrefectServer:
    api_url: str
    env: dict[str, str]  # what a client or worker process needs to talk to this server
    log: Path  # the server's output (its services' errors)


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise RuntimeError(f"prefect server did not answer {url}/health within {timeout:.0f} s: {log.read_text()[-2000:]}")


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """A real `prefect server start` backed by a PostgreSQL database of its own, on a free port."""
    try:
        admin = psycopg.connect(PG_ADMIN_DSN, autocommit=True)
    except psycopg.OperationalError as exc:
        missing_service(f"PostgreSQL at 127.0.0.1:5432 is not answering ({str(exc).strip().splitlines()[0]})")
    name = f"prefect_e2e_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    home = tmp_path_factory.mktemp("prefect-home")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    api_url = f"http://127.0.0.1:{port}/api"
    # a training run earlier in this session made this process a world of one (RANK, MASTER_PORT ... set, the
    # port held): the server's flow runs must pick their own rendezvous.
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k not in DISTRIBUTED_VARS}
    env = inherited | {
        "PREFECT_HOME": str(home), "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false",
        # a night waiting for the deployment's one slot retries after 3 s, not 30 (tests queue several nights).
        "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "3",
        # the scheduler looks for deployments to schedule every 5 s, not 60 (the schedule tests wait for it).
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5",
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}",
    }
    log = home / "server.log"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                     "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        try:
            _wait_healthy(api_url, proc, log, timeout=180)
            yield PrefectServer(api_url, env, log)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
