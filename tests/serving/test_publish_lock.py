"""Two publishes (or a publish and a rollback) on one metadata store: the second is refused at once, naming the
first, instead of racing it through the same export and staging folders and then blaming the version."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lmforge_core.metadata.repository import NotFoundError
from lmforge_core.runtime import open_runtime
from lmforge_core.settings import load_settings
from tasks.publish.publish import PublishError, publish_model, rollback_serving

ROOT = Path(__file__).resolve().parents[2]
HOLDER = """
import sys
from lmforge_core.metadata import MetadataStore
from lmforge_core.metadata.locks import LockKey, store_lock
from pathlib import Path
with store_lock(MetadataStore(sys.argv[1]), LockKey.PUBLISH, "publish", Path(sys.argv[2])):
    print("held", flush=True)
    sys.stdin.read()
"""


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_second_publish_is_refused_naming_the_first_and_runs_once_it_is_gone(
        backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    url = "" if backend == "sqlite" else request.getfixturevalue("fresh_postgres_url")
    rt = open_runtime(load_settings(workspace=tmp_path / "ws", database_url=url))
    first = subprocess.Popen([sys.executable, "-c", HOLDER, rt.settings.database_url, str(rt.settings.workspace)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert first.stdout is not None and first.stdout.readline() == "held\n"
        with pytest.raises(PublishError, match=f"another publish or rollback is running.*pid.{first.pid}") as info:
            publish_model(rt, "v1")
        assert "already exists" not in str(info.value) and "nothing was done" in str(info.value)
        with pytest.raises(PublishError, match="another publish or rollback is running"):
            rollback_serving(rt, actor="ops")
    finally:
        first.communicate("", timeout=60)
    with pytest.raises(NotFoundError, match="v1"):  # past the lock: the store has no such model version
        publish_model(rt, "v1")
    rt.metadata.dispose()
