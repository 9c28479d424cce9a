"""Fixtures of the review suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """A temporary Prefect API for the test that resumes a paused flow run (same as tests/data's; the lead
    may lift both into tests/conftest.py)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness():
        yield
