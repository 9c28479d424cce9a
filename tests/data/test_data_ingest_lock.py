"""One ingest at a time per metadata store: while an ingest runs in another process, a second ingest (or retry)
fails at once naming it and changes nothing; once the first has finished, or died, the next one runs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from sqlalchemy import event, func, select
from typer.testing import CliRunner

from flows.cli import app
from flows.cli.common import CliError
from lmforge_core.metadata import repository as repo
from lmforge_core.metadata.models import DatasetVersion, DocumentRemoval, SourceShard, TokenizerVersion, Validation
from tasks.ingest.ingest_lock import IngestLockedError, IngestLockLostError
from tasks.ingest.pipeline import run_ingest
from tasks.ingest.retry import retry_batch

ROOT = Path(__file__).resolve().parents[2]
DATA = {"workers": 1, "chunk_docs": 64, "gate": {"min_rows": 3}, "tokenizer": {"vocab_size": 400}}
# A real second process: runs an ingest and stops after its first shard (its batch running, its documents staged
# in the dedup index) until the release file appears.
HOLDER = textwrap.dedent(f"""
    import sys, time
    from pathlib import Path
    from lmforge_core.runtime import open_runtime
    from lmforge_core.settings import load_settings
    from tasks.ingest.pipeline import run_ingest

    workspace, database_url, source, release = sys.argv[1:]
    rt = open_runtime(load_settings(workspace=Path(workspace), database_url=database_url, data={DATA!r}))

    def hold(name, i, total):
        if i == 1:
            print("holding", flush=True)
            while not Path(release).exists():
                time.sleep(0.05)

    result = run_ingest(rt, source, progress=hold)
    print(result.status, result.batch_id, result.records_accepted, flush=True)
""")


def start_holder(rt, source: Path, release: Path) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(rt.settings.workspace), rt.settings.database_url, str(source), str(release)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    line = holder.stdout.readline()
    assert line.strip() == "holding", holder.communicate()[1]
    return holder


def statuses(rt) -> list[str]:
    with rt.metadata.session() as session:
        return sorted(b.status.value for b in repo.list_batches(session, limit=50))


def run_once_the_lock_is_free(rt, source: Path):
    """A PostgreSQL server ends a dead client's session (and its lock) a moment after the process is gone."""
    for _ in range(100):
        try:
            return run_ingest(rt, str(source))
        except IngestLockedError:
            time.sleep(0.1)
    return run_ingest(rt, str(source))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_second_ingest_is_refused_while_one_runs_and_nothing_is_lost(
        backend, request, tmp_path, data_runtime_factory, make_prose, jsonl_writer, monkeypatch) -> None:
    url = "" if backend == "sqlite" else request.getfixturevalue("fresh_postgres_url")
    rt = data_runtime_factory(database_url=url)
    first, second = tmp_path / "first", tmp_path / "second"
    for part in range(2):
        jsonl_writer(first / f"part-{part}.jsonl",
                     [{"id": f"a{s}", "text": make_prose(s)} for s in range(5 * part, 5 * part + 5)])
        jsonl_writer(second / f"part-{part}.jsonl",
                     [{"id": f"b{s}", "text": make_prose(s)} for s in range(100 + 5 * part, 105 + 5 * part)])

    # 1. the holder runs to completion; everything tried while it runs is refused and changes nothing.
    release = tmp_path / "release-1"
    holder = start_holder(rt, first, release)
    try:
        with rt.metadata.session() as session:
            [running] = repo.list_batches(session, limit=50)
        with pytest.raises(IngestLockedError) as refused:
            run_ingest(rt, str(second))
        message = str(refused.value)
        assert f"pid {holder.pid} on {socket.gethostname()}"[:40] in message
        assert f"batch {running.id} (from {first}" in message and "Wait for it to finish" in message, message
        with pytest.raises(IngestLockedError, match=f"pid {holder.pid}"):
            retry_batch(rt, running.id)
        for name, value in {"WORKSPACE": str(rt.settings.workspace), "DATABASE_URL": url}.items():
            monkeypatch.setenv(f"LMFORGE_{name}", value)
        out = CliRunner().invoke(app, ["ingest", str(second)])
        assert out.exit_code == 1 and isinstance(out.exception, CliError)
        assert "another ingest is running" in str(out.exception)
        assert statuses(rt) == ["running"]  # the holder's batch was neither taken over nor closed
    finally:
        release.touch()
        out, err = holder.communicate(timeout=300)
    assert holder.returncode == 0, err
    assert out.split()[-3:] == ["accepted", str(running.id), "10"]
    assert run_ingest(rt, str(first)).status == "nothing_new"

    # 2. a holder that dies mid-batch leaves no lock behind: the next ingest closes its batch and takes its shards.
    holder = start_holder(rt, second, tmp_path / "never")
    holder.kill()
    holder.communicate(timeout=60)
    after = run_once_the_lock_is_free(rt, second)
    assert after.status == "accepted" and after.records_accepted == 10 and after.rejected == {}
    assert statuses(rt) == ["accepted", "accepted", "failed"]  # the dead holder's batch, closed as abandoned


def terminate_the_lock_session(database: str) -> None:
    """End the advisory lock's session from another connection, as a network drop or a server restart would."""
    import psycopg

    with psycopg.connect(f"host=127.0.0.1 port=5432 user=postgres dbname={database}", autocommit=True) as admin:
        killed = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name LIKE 'lmforge ingest pid %%' AND datname = current_database()").fetchall()
    assert killed == [(True,)]


def recorded(rt) -> dict[str, int]:
    with rt.metadata.session() as session:
        return {model.__name__: session.scalar(select(func.count()).select_from(model))
                for model in (SourceShard, DatasetVersion, TokenizerVersion, Validation, DocumentRemoval)}


@pytest.mark.parametrize("when", ["mid-batch", "in-the-commit-transaction"])
@pytest.mark.parametrize("outcome", ["accepted", "quarantined"])
def test_a_lost_postgresql_lock_commits_nothing_of_the_batch(
        outcome, when, tmp_path, data_runtime_factory, fresh_postgres_url, make_prose, jsonl_writer) -> None:
    """A real batch loses its lock: while its shards are processed, or inside the commit transaction (after the
    first check passed). Whichever branch it takes (accept, or quarantine by the gate), nothing of it is
    committed, and the next ingest takes all of its records again."""
    gate = {"min_rows": 3} if outcome == "accepted" else {"min_rows": 3, "max_reject_rate": 0.1}
    rt = data_runtime_factory(database_url=fresh_postgres_url, gate=gate)
    src = tmp_path / "src"
    jsonl_writer(src / "part-0.jsonl", [{"id": f"a{s}", "text": make_prose(s)} for s in range(4)])
    jsonl_writer(src / "part-1.jsonl", [*({"id": f"b{s}", "text": make_prose(s)} for s in range(4, 8)),
                                        {"id": "short", "text": "too short to pass the filters"}])
    database = rt.metadata.engine.url.database

    def lose_the_lock_mid_batch(name: str, i: int, total: int) -> None:
        if when == "mid-batch" and i == 1:  # the first shard is assessed and staged in the dedup index
            terminate_the_lock_session(database)

    def lose_the_lock_in_the_commit(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.lstrip().upper().startswith("UPDATE DATA_BATCHES"):  # finish_batch, inside the transaction
            terminate_the_lock_session(database)

    if when == "in-the-commit-transaction":
        event.listen(rt.metadata.engine, "before_cursor_execute", lose_the_lock_in_the_commit)
    with pytest.raises(IngestLockLostError, match="nothing of this batch was committed"):
        run_ingest(rt, str(src), progress=lose_the_lock_mid_batch)
    if when == "in-the-commit-transaction":
        event.remove(rt.metadata.engine, "before_cursor_execute", lose_the_lock_in_the_commit)

    assert statuses(rt) == ["running"]  # neither accepted nor quarantined
    assert recorded(rt) == dict.fromkeys(recorded(rt), 0)
    again = run_once_the_lock_is_free(rt, src)  # closes the lost batch as abandoned
    assert (again.status, again.records_read) == (outcome, 9)
    assert again.rejected.get("exact_duplicate", 0) == 0  # nothing of the lost batch entered the dedup index
    assert statuses(rt) == sorted([outcome, "failed"])
    assert recorded(rt)["SourceShard"] == 2 and recorded(rt)["DocumentRemoval"] == 1
