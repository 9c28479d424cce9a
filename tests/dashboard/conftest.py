"""Dashboard fixtures: seeded and empty metadata stores (SQLite and PostgreSQL) and the settings the
dashboard process reads (LMFORGE_* variables), with one reviewer whose password hash is argon2id."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from seeding import PASSWORD, REVIEWER, Platform, seed_platform

from lmforge_core.passwords import hash_password
from lmforge_core.runtime import open_runtime
from lmforge_core.settings import load_settings


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


@pytest.fixture
def empty(backend_url: str, tmp_path: Path, reviewer_hash: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Platform]:
    """A fresh (migrated, empty) store on each backend."""
    platform = _open(tmp_path / "ws", backend_url, reviewer_hash, seed=False)
    for key, value in platform.env.items():
        monkeypatch.setenv(key, value)
    yield platform
    platform.runtime.metadata.dispose()
