"""One ingest at a time per metadata store: `ingest_lock` refuses a second one at once, naming the first.

Two ingests over the same stores would both stage documents against the same dedup index and
overwrite each other's snapshot, and the second would close the first's running batch as abandoned.
The lock is tied to the metadata store, so it covers every process and host that shares it:
- PostgreSQL: a session-level advisory lock, taken on a connection of its own that lives as long as
  the ingest; the holder labels that connection (``application_name``) with its pid and host, which
  a refused process reads from ``pg_stat_activity`` together with the time the lock was taken;
- SQLite: an exclusive ``flock`` on ``<database file>.ingest-lock``, whose content is the holder's
  pid, host and start time.
Either dies with its process (the server ends the session, the kernel closes the file), so an ingest
that crashed never blocks the next one; that one then closes the crashed ingest's batch as abandoned.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Connection, column, func, select, table

from lmforge_core.metadata import repository as repo
from lmforge_core.metadata.models import BatchStatus
from lmforge_core.runtime import Runtime

PG_LOCK_ID = 0x1F0F1E  # any constant shared by every lmforge process (the migration lock uses 0x1F0F0E)
_PG_LABEL_BYTES = 63  # PostgreSQL truncates application_name there
_locks = table("pg_locks", column("pid"), column("locktype"), column("classid"), column("objid"),
               column("objsubid"), column("granted"))
_activity = table("pg_stat_activity", column("pid"), column("datname"), column("application_name"),
                  column("query_start"), column("client_addr"))


class IngestLockedError(RuntimeError):
    """Another ingest holds the lock; the message names it and says what to do."""


class IngestLockLostError(RuntimeError):
    """The lock's database session ended while the ingest ran: another ingest may hold it now."""


# What `ingest_lock` yields: called before each commit step, it raises `IngestLockLostError` if the lock is gone.
ConfirmLock = Callable[[], None]


def _holder() -> dict[str, str | int]:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.now(UTC).isoformat(timespec="seconds")}


def _running_batches(runtime: Runtime) -> str:
    """The batches the lock holder is running (with the lock held elsewhere, a running batch is its own)."""
    with runtime.metadata.session() as session:
        running = [b for b in repo.list_batches(session, limit=50) if b.status == BatchStatus.RUNNING]
        if not running:
            return "no batch created yet"
        return "running " + ", ".join(
            f"batch {b.id} (from {b.source_uri}, started {b.started_at:%Y-%m-%d %H:%M:%S} UTC)" for b in running)


def _refusal(where: str, holder: str, runtime: Runtime) -> IngestLockedError:
    return IngestLockedError(
        f"another ingest is running on this metadata store ({where}): {holder}; {_running_batches(runtime)}. "
        "Wait for it to finish, then run again (the lock goes with that process: if it crashed, just run again)"
    )


@contextmanager
def ingest_lock(runtime: Runtime) -> Iterator[ConfirmLock]:
    """Hold the ingest lock for the block, or raise `IngestLockedError` at once.

    Yields a function to call right before the batch's commit steps: a PostgreSQL session lock is lost
    if its connection is (network drop, server restart, a killed backend), and then a second ingest
    may already be running; committing anyway could admit documents twice.
    """
    url = runtime.metadata.engine.url
    if url.get_backend_name() == "postgresql":
        with _advisory_lock(runtime) as confirm:
            yield confirm
    else:
        database = url.database if url.get_backend_name() == "sqlite" and url.database not in (None, ":memory:") \
            else None
        path = Path(f"{database}.ingest-lock") if database else runtime.settings.workspace / "ingest.lock"
        with _file_lock(runtime, path):
            yield lambda: None  # an flock lasts as long as this process: it cannot be lost


@contextmanager
def _advisory_lock(runtime: Runtime) -> Iterator[ConfirmLock]:
    connection = runtime.metadata.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        if not connection.execute(select(func.pg_try_advisory_lock(PG_LOCK_ID))).scalar():
            raise _refusal(f"PostgreSQL advisory lock {PG_LOCK_ID:#x}", _pg_holder(connection), runtime)
        me = _holder()
        label = f"lmforge ingest pid {me['pid']} on {me['host']}".encode()[:_PG_LABEL_BYTES].decode(errors="ignore")
        # nothing else runs on this connection, so its query_start stays the time the lock was taken
        connection.execute(select(func.set_config("application_name", label, False)))

        def confirm() -> None:
            # a session lock is only released by its session ending: the session answering means it is held
            try:
                connection.execute(select(func.pg_backend_pid())).scalar()
            except Exception as exc:  # any driver error: the session is gone or unusable
                raise IngestLockLostError(
                    f"the ingest lock's database session ended while the batch ran ({type(exc).__name__}); "
                    "nothing of this batch was committed. Run the ingest again") from exc

        yield confirm
    finally:
        connection.invalidate()  # closes the session, which releases the lock; never back into the pool
        connection.close()


def _pg_holder(connection: Connection) -> str:
    """Who holds the advisory lock, from pg_locks and pg_stat_activity."""
    holder = connection.execute(
        select(_activity.c.application_name, _activity.c.query_start, _activity.c.client_addr)
        .select_from(_locks.join(_activity, _activity.c.pid == _locks.c.pid))
        .where(_locks.c.locktype == "advisory", _locks.c.granted, _locks.c.classid == 0,
               _locks.c.objid == PG_LOCK_ID, _locks.c.objsubid == 1,  # how pg_locks shows a one-bigint key
               _activity.c.datname == func.current_database())  # advisory locks are per database
    ).first()
    if holder is None:
        return "a process that just released it or has not labelled itself yet"
    name, since, address = holder
    client = f" (connected from {address})" if address else ""
    # query_start is NULL for another role's sessions unless this role may read all statistics
    when = f", since {since.isoformat(timespec='seconds')}" if since is not None else ""
    return f"{name or 'an unlabelled session'}{client}{when}"


@contextmanager
def _file_lock(runtime: Runtime, path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o644), "r+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _refusal(f"lock file {path}", _file_holder(handle.read()), runtime) from None
        handle.truncate(0)
        handle.write(json.dumps(_holder()))
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)


def _file_holder(content: str) -> str:
    try:
        holder = json.loads(content)
        return f"lmforge ingest pid {holder['pid']} on {holder['host']}, since {holder['started']}"
    except (ValueError, KeyError, TypeError):
        return "a process that has not written its name yet"
