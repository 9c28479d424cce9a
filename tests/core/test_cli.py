"""The lmforge CLI as a person and a script use it: a real subprocess, real stores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

LMFORGE = [sys.executable, "-m", "flows.cli"]


def _schema_head() -> str:
    """The newest migration shipped: read from the Alembic scripts, not typed here."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from lmforge_core.metadata.store import MIGRATIONS_DIR

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


SCHEMA_HEAD = _schema_head()


def lmforge(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LMFORGE_")}
    full_env.update(env or {}, COLUMNS="200")
    return subprocess.run([*LMFORGE, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=120)


def test_init_then_status_on_the_embedded_defaults(tmp_path: Path) -> None:
    init = lmforge("init", "--json", cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    assert json.loads(init.stdout)["schema_revision"] == SCHEMA_HEAD
    assert (tmp_path / ".lmforge" / "metadata.db").is_file()
    status = lmforge("status", "--json", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["database"]["ok"] and data["artifacts"]["ok"]
    assert data["production_model"] is None and data["latest_runs"] == []
    human = lmforge("status", cwd=tmp_path)
    assert "production model" in human.stdout and "reachable" in human.stdout


def test_init_then_status_on_postgresql_and_s3(tmp_path: Path, fresh_postgres_url: str, s3_bucket: str) -> None:
    env = {"LMFORGE_DATABASE_URL": fresh_postgres_url, "LMFORGE_ARTIFACT_URI": f"s3://{s3_bucket}/lmforge"}
    init = lmforge("init", cwd=tmp_path, env=env)
    assert init.returncode == 0, init.stderr
    status = lmforge("status", "--json", cwd=tmp_path, env=env)
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["settings"]["database_url"].startswith("postgresql+psycopg://")
    assert data["database"]["schema_revision"] == data["database"]["schema_head"] == SCHEMA_HEAD
    assert data["artifacts"] == {"ok": True}


def test_db_upgrade_reports_revisions(tmp_path: Path) -> None:
    result = lmforge("db", "upgrade", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "database": f"sqlite:///{tmp_path / '.lmforge' / 'metadata.db'}",
        "from_revision": None,
        "to_revision": SCHEMA_HEAD,
    }


def test_unreachable_database_is_one_masked_line_and_debug_shows_the_traceback(tmp_path: Path) -> None:
    env = {"LMFORGE_DATABASE_URL": "postgresql+psycopg://bob:hunter2@127.0.0.1:1/nowhere"}
    result = lmforge("init", cwd=tmp_path, env=env)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: cannot connect")
    assert "hunter2" not in result.stderr + result.stdout and "Traceback" not in result.stderr
    debug = lmforge("--debug", "init", cwd=tmp_path, env=env)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and debug.stdout == ""
    assert debug.stderr.splitlines()[-1].startswith("error: cannot connect")


def test_error_text_is_never_read_as_markup(tmp_path: Path) -> None:
    result = lmforge("init", cwd=tmp_path, env={"LMFORGE_ARTIFACT_URI": "ftp://x/[/bold]"})
    assert result.returncode == 1 and "[/bold]" in result.stderr and "Traceback" not in result.stderr


def test_status_reports_an_unreachable_store_with_exit_code_1(tmp_path: Path) -> None:
    env = {"LMFORGE_DATABASE_URL": "postgresql+psycopg://bob:hunter2@127.0.0.1:1/nowhere"}
    result = lmforge("status", "--json", cwd=tmp_path, env=env)
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert data["database"]["ok"] is False and "127.0.0.1:1" in data["database"]["error"]
    assert "hunter2" not in result.stdout


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"LMFORGE_MODEL_NAME": "../x"}, "invalid settings: model_name"),
        ({"LMFORGE_ARTIFACT_URI": "ftp://host/x"}, "unsupported artifact URI"),
    ],
)
def test_bad_settings_are_named(tmp_path: Path, env: dict[str, str], expected: str) -> None:
    result = lmforge("init", cwd=tmp_path, env=env)
    assert result.returncode == 1 and expected in result.stderr
