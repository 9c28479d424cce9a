"""Backends for the core suites: each metadata test runs on SQLite and PostgreSQL, each artifact
test on the local folder and on a real S3 endpoint."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lmforge_core.artifacts import ArtifactStore
from lmforge_core.artifacts.factory import store_for_uri
from lmforge_core.metadata import MetadataStore


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'meta.db'}"
    return request.getfixturevalue("fresh_postgres_url")


@pytest.fixture
def store(db_url: str) -> Iterator[MetadataStore]:
    metadata = MetadataStore(db_url)
    metadata.upgrade()
    yield metadata
    metadata.dispose()


@pytest.fixture(params=["local", "s3"])
def artifacts(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return store_for_uri(str(tmp_path / "artifacts"))
    bucket = request.getfixturevalue("s3_bucket")
    return store_for_uri(f"s3://{bucket}/some/prefix")
