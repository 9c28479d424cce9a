"""Dashboard fixtures: seeded and empty metadata stores (SQLite and PostgreSQL) and the settings the
dashboard process reads (LMFORGE_* variables), with one reviewer whose password hash is argon2id."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from seeding import PASSWORD, REVIEWER, Platform, seed_platform
from sqlalchemy.engine import make_url

from lmforge_core.passwords import hash_password
from lmforge_core.runtime import open_runtime
from lmforge_core.settings import load_settings


@pytest.fixture(autouse=True)
def _main_module_restored() -> Iterator[None]:
    """AppTest runs the app as ``__main__`` and leaves it there; a later test that spawns processes
    (the ingest workers) would make every child re-run the dashboard. Put the real one back."""
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main


@pytest.fixture(scope="session")
def reviewer_hash() -> str:
    return hash_password(PASSWORD)


def _env(workspace: Path, url: str, reviewer_hash: str) -> dict[str, str]:
    return {"LMFORGE_WORKSPACE": str(workspace), "LMFORGE_DATABASE_URL": url,
            "LMFORGE_ARTIFACT_URI": str(workspace / "artifacts"),
            "LMFORGE_DASHBOARD__REVIEWERS": json.dumps([{"name": REVIEWER, "password_hash": reviewer_hash}])}


def _open(workspace: Path, url: str, reviewer_hash: str, seed: bool) -> Platform:
    env = _env(workspace, url, reviewer_hash)
    rt = open_runtime(load_settings(workspace=workspace, database_url=url, artifact_uri=env["LMFORGE_ARTIFACT_URI"]))
    return Platform(rt, seed_platform(rt) if seed else None, env)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ws' / 'metadata.db'}"
    return request.getfixturevalue("fresh_postgres_url")


@pytest.fixture
def seeded(backend_url: str, tmp_path: Path, reviewer_hash: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Platform]:
    """A seeded store on each backend, its settings in the environment the app reads."""
    platform = _open(tmp_path / "ws", backend_url, reviewer_hash, seed=True)
    for key, value in platform.env.items():
        monkeypatch.setenv(key, value)
    yield platform
    platform.runtime.metadata.dispose()


@pytest.fixture(scope="session")
def _read_only_stores(tmp_path_factory: pytest.TempPathFactory, reviewer_hash: str,
                      request: pytest.FixtureRequest) -> Iterator[dict[tuple[str, bool], Platform]]:
    """Seeded and empty stores on each backend, made on first use and shared by the tests that only read
    (pages rendered without signing in write nothing)."""
    made: dict[tuple[str, bool], Platform] = {}
    databases: list[str] = []
    server: list[str] = []  # the session's PostgreSQL URL, taken while fixtures may still be requested

    def make(backend: str, seed: bool) -> Platform:
        if (backend, seed) not in made:
            workspace = tmp_path_factory.mktemp(f"{backend}-{'seeded' if seed else 'empty'}") / "ws"
            if backend == "sqlite":
                url = f"sqlite:///{workspace / 'metadata.db'}"
            else:
                server[:] = [request.getfixturevalue("postgres_url")]
                url = _new_postgres_database(server[0], databases)
            made[(backend, seed)] = _open(workspace, url, reviewer_hash, seed=seed)
        return made[(backend, seed)]

    yield make  # type: ignore[misc]
    for platform in made.values():
        platform.runtime.metadata.dispose()
    if databases:
        admin_url = make_url(server[0])
        with psycopg.connect(host=admin_url.host, port=admin_url.port, user=admin_url.username, dbname="postgres",
                             autocommit=True) as admin:
            for name in databases:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _new_postgres_database(session_url: str, made: list[str]) -> str:
    url = make_url(session_url)
    name = f"lmforge_dash_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(host=url.host, port=url.port, user=url.username, dbname="postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    made.append(name)
    return url.set(database=name).render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def seeded_view(request: pytest.FixtureRequest, _read_only_stores, monkeypatch: pytest.MonkeyPatch) -> Platform:
    """The shared seeded store of a backend, for tests that only look (they must not sign in or act)."""
    platform = _read_only_stores(request.param, True)
    for key, value in platform.env.items():
        monkeypatch.setenv(key, value)
    return platform


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_view(request: pytest.FixtureRequest, _read_only_stores, monkeypatch: pytest.MonkeyPatch) -> Platform:
    """The shared fresh (migrated, empty) store of a backend, for tests that only look."""
    platform = _read_only_stores(request.param, False)
    for key, value in platform.env.items():
        monkeypatch.setenv(key, value)
    return platform
