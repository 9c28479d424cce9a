"""Locks that hold across every process and host sharing one metadata store.

- `advisory_lock`: the one PostgreSQL advisory-lock call (session or transaction scope, waiting or
  not); the migration lock (`MetadataStore.upgrade`) and `store_lock` both use it.
- `store_lock`: an exclusive named lock for a block, refused at once (`LockHeldError`, naming the
  holder) while another process holds it:
  - PostgreSQL: a session-level advisory lock, taken on a connection of its own that lives as long as
    the block; the holder labels that connection (``application_name``) with its pid and host, which a
    refused process reads from ``pg_stat_activity`` together with the time the lock was taken;
  - SQLite: an exclusive ``flock`` on ``<database file>.<name>-lock``, whose content is the holder's
    pid, host and start time.
  Either dies with its process (the server ends the session, the kernel closes the file), so a holder
  that crashed never blocks the next one.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, column, func, select, table

if TYPE_CHECKING:
    from lmforge_core.metadata.store import MetadataStore

_PG_LABEL_BYTES = 63  # PostgreSQL truncates application_name there
_locks = table("pg_locks", column("pid"), column("locktype"), column("classid"), column("objid"),
               column("objsubid"), column("granted"))
_activity = table("pg_stat_activity", column("pid"), column("datname"), column("application_name"),
                  column("query_start"), column("client_addr"))


class LockKey(IntEnum):
    """PostgreSQL advisory-lock keys: constants shared by every lmforge process."""

    MIGRATION = 0x1F0F0E
    INGEST = 0x1F0F1E
    PUBLISH = 0x1F0F2E


class LockHeldError(RuntimeError):
    """Another process holds the lock: `where` names the lock, `holder` who holds it."""

    def __init__(self, where: str, holder: str) -> None:
        super().__init__(f"{where} is held by {holder}")
        self.where = where
        self.holder = holder


class LockLostError(RuntimeError):
    """The lock's database session ended while the block ran: another process may hold the lock now."""


# What `store_lock` yields: called before each commit step, it raises `LockLostError` if the lock is gone.
ConfirmLock = Callable[[], None]


def advisory_lock(connection: Connection, key: LockKey, *, transaction: bool, wait: bool) -> bool:
    """Take advisory lock `key` on `connection`: until the transaction ends (`transaction`) or the session
    does; waiting for it (`wait`, always True) or not (True if taken)."""
    name = f"pg_{'' if wait else 'try_'}advisory_{'xact_' if transaction else ''}lock"
    taken = connection.execute(select(getattr(func, name)(int(key)))).scalar()
    return True if wait else bool(taken)


def _holder() -> dict[str, str | int]:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.now(UTC).isoformat(timespec="seconds")}


@contextmanager
def store_lock(store: MetadataStore, key: LockKey, name: str, fallback_dir: Path) -> Iterator[ConfirmLock]:
    """Hold lock `name` (`key` on PostgreSQL) for the block, or raise `LockHeldError` at once.

    Yields a function to call right before each commit step: a PostgreSQL session lock is lost if its
    connection is (network drop, server restart, a killed backend), and then another process may hold
    it already. `fallback_dir` holds the lock file when the database is not a SQLite file.
    """
    url = store.engine.url
    if url.get_backend_name() == "postgresql":
        with _session_lock(store, key, name) as confirm:
            yield confirm
        return
    database = url.database if url.get_backend_name() == "sqlite" and url.database not in (None, ":memory:") \
        else None
    path = Path(f"{database}.{name}-lock") if database else fallback_dir / f"{name}.lock"
    with _file_lock(path, name):
        yield lambda: None  # an flock lasts as long as this process: it cannot be lost


@contextmanager
def _session_lock(store: MetadataStore, key: LockKey, name: str) -> Iterator[ConfirmLock]:
    connection = store.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        if not advisory_lock(connection, key, transaction=False, wait=False):
            raise LockHeldError(f"PostgreSQL advisory lock {int(key):#x}", _pg_holder(connection, key))
        me = _holder()
        label = f"lmforge {name} pid {me['pid']} on {me['host']}".encode()[:_PG_LABEL_BYTES].decode(errors="ignore")
        # nothing else runs on this connection, so its query_start stays the time the lock was taken
        connection.execute(select(func.set_config("application_name", label, False)))

        def confirm() -> None:
            # a session lock is only released by its session ending: the session answering means it is held
            try:
                connection.execute(select(func.pg_backend_pid())).scalar()
            except Exception as exc:  # any driver error: the session is gone or unusable
                raise LockLostError(
                    f"the {name} lock's database session ended ({type(exc).__name__})") from exc

        yield confirm
        # released here, at once: a closed session's locks go only when its backend has exited, which may
        # be after the next ingest already asked for the lock
        connection.execute(select(func.pg_advisory_unlock(int(key))))
    finally:
        connection.invalidate()  # closes the session (releasing the lock if the unlock above did not run)
        connection.close()


def _pg_holder(connection: Connection, key: LockKey) -> str:
    """Who holds advisory lock `key`, from pg_locks and pg_stat_activity."""
    holder = connection.execute(
        select(_activity.c.application_name, _activity.c.query_start, _activity.c.client_addr)
        .select_from(_locks.join(_activity, _activity.c.pid == _locks.c.pid))
        .where(_locks.c.locktype == "advisory", _locks.c.granted, _locks.c.classid == 0,
               _locks.c.objid == int(key), _locks.c.objsubid == 1,  # how pg_locks shows a one-bigint key
               _activity.c.datname == func.current_database())  # advisory locks are per database
    ).first()
    if holder is None:
        return "a process that just released it or has not labelled itself yet"
    label, since, address = holder
    client = f" (connected from {address})" if address else ""
    # query_start is NULL for another role's sessions unless this role may read all statistics
    when = f", since {since.isoformat(timespec='seconds')}" if since is not None else ""
    return f"{label or 'an unlabelled session'}{client}{when}"


@contextmanager
def _file_lock(path: Path, name: str) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o644), "r+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeldError(f"lock file {path}", _file_holder(handle.read(), name)) from None
        handle.truncate(0)
        handle.write(json.dumps(_holder()))
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)


def _file_holder(content: str, name: str) -> str:
    try:
        holder = json.loads(content)
        return f"lmforge {name} pid {holder['pid']} on {holder['host']}, since {holder['started']}"
    except (ValueError, KeyError, TypeError):
        return "a process that has not written its name yet"
