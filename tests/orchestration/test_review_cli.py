"""``lmforge review list|reject`` as a reviewer uses it: a real subprocess on a real store; the review is the
login user's, recorded with the comment, and the request it answers is resolved."""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
from pathlib import Path

from lmforge_core.metadata import repository as repo
from lmforge_core.metadata import review_repository as reviews
from lmforge_core.metadata.models import ModelStatus, ReviewRequestStatus
from lmforge_core.runtime import open_runtime
from lmforge_core.settings import load_settings

PROJECT = Path(__file__).resolve().parents[2]


def _lmforge(workspace: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMFORGE_")} | {
        "LMFORGE_WORKSPACE": str(workspace), "PYTHONPATH": str(PROJECT), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=workspace.parent, env=env,
                          capture_output=True, text=True, timeout=120)


def test_review_list_then_reject_records_the_login_user_and_resolves_the_request(tmp_path: Path) -> None:
    rt = open_runtime(load_settings(workspace=tmp_path / "ws"))
    try:
        with rt.metadata.session() as session:
            model = repo.register_model_version(session, name="lmforge", training_run_pk=None, parent_id=None,
                                                artifacts={})
            request = reviews.open_review_request(session, model_version_id=model.id, reason="needs_review: bias")
            model_id, request_id = model.id, request.id

        listed = _lmforge(tmp_path / "ws", "review", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        (pending,) = json.loads(listed.stdout)["pending"]
        assert (pending["request_id"], pending["model"], pending["reason"]) == (request_id, "lmforge:v1",
                                                                                "needs_review: bias")

        rejected = _lmforge(tmp_path / "ws", "review", "reject", "v1", "--comment", "drifts off topic", "--json")
        assert rejected.returncode == 0, rejected.stderr
        assert json.loads(rejected.stdout)["reviewer"] == getpass.getuser()
        with rt.metadata.session() as session:
            (review,) = repo.reviews_for(session, model_id)
            assert (review.reviewer, review.comment) == (getpass.getuser(), "drifts off topic")
            assert session.get(reviews.ReviewRequest, request_id).status is ReviewRequestStatus.REJECTED
            assert repo.resolve_model_version(session, "lmforge", "v1").status is ModelStatus.REJECTED
        again = _lmforge(tmp_path / "ws", "review", "approve", "v9", "--comment", "x")
        assert again.returncode == 1 and "v9" in again.stderr and "Traceback" not in again.stderr
    finally:
        rt.metadata.dispose()
