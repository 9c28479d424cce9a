"""The lmforge CLI as a person and a script use it: a real subprocess, real stores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

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


def test_status_masks_a_password_holding_at_signs_and_the_repository_credentials(tmp_path: Path) -> None:
    env = {"LMFORGE_DATABASE_URL": "postgresql+psycopg://bob:Qx7k@Zr9w@Vb2@127.0.0.1:1/nowhere",
           "LMFORGE_SERVING__REPOSITORY": "s3://http://AKIAEXAMPLE:wJalrXUtnFEMI@127.0.0.1:9000/bucket/repo"}
    result = lmforge("status", "--json", cwd=tmp_path, env=env)
    assert result.returncode == 1
    data = json.loads(result.stdout)
    printed = result.stdout + result.stderr
    assert not any(secret in printed for secret in ("Qx7k", "Zr9w", "Vb2", "wJalrXUtnFEMI"))
    assert data["settings"]["database_url"] == "postgresql+psycopg://bob:***@127.0.0.1:1/nowhere"
    assert data["settings"]["serving"]["repository"].endswith(":***@127.0.0.1:9000/bucket/repo")
    assert "write an '@' of the user name or password as %40" in data["database"]["error"]


def _backend_waiting_on_a_lock(admin: psycopg.Connection, database: str, timeout: float = 90) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
                            (database,)).fetchone()
        if row is not None:
            return int(row[0])
        time.sleep(0.1)
    raise AssertionError(f"no backend of {database} came to wait on the lock within {timeout} s")


def test_a_database_lost_mid_command_is_one_line_not_its_sql(tmp_path: Path, fresh_postgres_url: str) -> None:
    """The CLI's query waits on a table lock; its server session is then killed, as a PostgreSQL that dies does."""
    env = {"LMFORGE_DATABASE_URL": fresh_postgres_url}
    assert lmforge("init", cwd=tmp_path, env=env).returncode == 0
    url = make_url(fresh_postgres_url)
    dsn = {"host": url.host, "port": url.port, "user": url.username}
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LMFORGE_")} | env
    with psycopg.connect(**dsn, dbname=url.database) as holder, \
            psycopg.connect(**dsn, dbname="postgres", autocommit=True) as admin:
        holder.execute("LOCK TABLE training_runs IN ACCESS EXCLUSIVE MODE")
        proc = subprocess.Popen([*LMFORGE, "status"], cwd=tmp_path, env=full_env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            admin.execute("SELECT pg_terminate_backend(%s)", (_backend_waiting_on_a_lock(admin, url.database),))
            _, stderr = proc.communicate(timeout=120)
        finally:
            proc.kill()
    assert proc.returncode == 1
    assert stderr.count("\n") == 1 and stderr.startswith("error: the metadata database failed: "), stderr
    assert "terminating connection" in stderr and "SELECT" not in stderr and "[SQL" not in stderr


@pytest.mark.parametrize("ref", ["v²", "lmforge:v٣", "1" * 25, "v" + "9" * 12])
def test_a_version_ref_that_is_no_number_or_out_of_range_is_named(tmp_path: Path, ref: str) -> None:
    assert lmforge("init", cwd=tmp_path).returncode == 0
    result = lmforge("export-hf", ref, str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "unexpected" not in result.stderr and ("out of range" in result.stderr or "no alias" in result.stderr)
    assert not (tmp_path / "out").exists()
