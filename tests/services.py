"""What the suite does when a service it needs (PostgreSQL, checkov, Chromium, ...) is missing.

It fails, whatever CI says, unless the person running the tests opts out with LMFORGE_TEST_ALLOW_SKIPS=1:
then those tests skip with the reason, which pytest's summary (`-ra`) shows.
"""

from __future__ import annotations

import os

import pytest

# Read at import, before tests/conftest.py's autouse fixture hides every LMFORGE_* variable from the tests.
ALLOW_SKIPS = os.environ.get("LMFORGE_TEST_ALLOW_SKIPS", "") == "1"


def missing_service(reason: str) -> None:
    """A needed service is missing: fail, or skip with the reason when LMFORGE_TEST_ALLOW_SKIPS=1."""
    if not ALLOW_SKIPS:
        pytest.fail(f"{reason} (set LMFORGE_TEST_ALLOW_SKIPS=1 to skip such tests instead)")
    pytest.skip(reason)
