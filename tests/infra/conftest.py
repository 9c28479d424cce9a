"""Fixtures of the Terraform checks: the configuration parsed once per session, and checkov.

checkov lives in its own virtual environment (<repo>/.venv-checkov, see the Makefile) because its
dependencies conflict with the app's pins; a checkov on PATH is used otherwise. Where neither
exists the checkov test skips with that reason, except under CI=true, where it fails.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from tf_invariants import Module, load_tree

REPO = Path(__file__).resolve().parents[2]
TERRAFORM_ROOT = REPO / "infra" / "terraform"
IN_CI = os.environ.get("CI", "").lower() == "true"
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
        reason = f"checkov is not installed (python3 -m venv .venv-checkov && {INSTALL_CHECKOV})"
        if IN_CI:
            pytest.fail(f"{reason}; CI requires it")
        pytest.skip(reason)
    return found
