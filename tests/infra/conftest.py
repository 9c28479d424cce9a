"""Fixtures of the Terraform checks: the configuration parsed once per session, and checkov.

checkov lives in its own virtual environment (<repo>/.venv-checkov, see the Makefile) because its
dependencies conflict with the app's pins; a checkov on PATH is used otherwise. Where neither
exists the checkov test fails (skips with the reason under LMFORGE_TEST_ALLOW_SKIPS=1).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from services import missing_service
from tf_invariants import Module, load_tree

REPO = Path(__file__).resolve().parents[2]
TERRAFORM_ROOT = REPO / "infra" / "terraform"
INSTALL_CHECKOV = ".venv-checkov/bin/pip install checkov==3.3.30"


@pytest.fixture(scope="session")
def terraform_root() -> Path:
    return TERRAFORM_ROOT


@pytest.fixture(scope="session")
def modules() -> dict[Path, Module]:
    """Every directory of .tf files under infra/terraform, parsed."""
    return load_tree(TERRAFORM_ROOT)


@pytest.fixture(scope="session")
def checkov() -> str:
    """Path of the checkov executable."""
    candidates = [REPO / ".venv-checkov" / "bin" / "checkov", shutil.which("checkov")]
    found = next((str(c) for c in candidates if c and Path(c).is_file()), None)
    if found is None:
        missing_service(f"checkov is not installed (python3 -m venv .venv-checkov && {INSTALL_CHECKOV})")
    return found
