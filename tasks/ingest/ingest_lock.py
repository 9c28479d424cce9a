"""One ingest at a time per metadata store: `ingest_lock` refuses a second one at once, naming the first.

Two ingests over the same stores would both stage documents against the same dedup index and
overwrite each other's snapshot, and the second would close the first's running batch as abandoned.
The lock is `lmforge_core.metadata.locks.store_lock` (a PostgreSQL advisory lock, or a file lock
beside a SQLite database), so it covers every process and host that shares the store and dies with
its holder: an ingest that crashed never blocks the next one, which then closes the crashed ingest's
batch as abandoned. This module adds what an ingest needs: the running batches in the refusal, and
a lost lock named as one that stops the batch before it commits.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from lmforge_core.metadata import repository as repo
from lmforge_core.metadata.locks import ConfirmLock, LockHeldError, LockKey, LockLostError, store_lock
from lmforge_core.metadata.models import BatchStatus
from lmforge_core.runtime import Runtime


class IngestLockedError(RuntimeError):
    """Another ingest holds the lock; the message names it and says what to do."""


class IngestLockLostError(LockLostError):
    """The lock's database session ended while the ingest ran: another ingest may hold it now."""


def _running_batches(runtime: Runtime) -> str:
    """The batches the lock holder is running (with the lock held elsewhere, a running batch is its own)."""
    with runtime.metadata.session() as session:
        running = [b for b in repo.list_batches(session, limit=50) if b.status == BatchStatus.RUNNING]
        if not running:
            return "no batch created yet"
        return "running " + ", ".join(
            f"batch {b.id} (from {b.source_uri}, started {b.started_at:%Y-%m-%d %H:%M:%S} UTC)" for b in running)


@contextmanager
def ingest_lock(runtime: Runtime) -> Iterator[ConfirmLock]:
    """Hold the ingest lock for the block, or raise `IngestLockedError` at once.

    Yields a function to call right before each of the batch's commit steps; it raises
    `IngestLockLostError` when the lock is gone (committing anyway could admit documents twice).
    """
    with ExitStack() as stack:
        try:
            confirm_held = stack.enter_context(
                store_lock(runtime.metadata, LockKey.INGEST, "ingest", runtime.settings.workspace))
        except LockHeldError as exc:
            raise IngestLockedError(
                f"another ingest is running on this metadata store ({exc.where}): {exc.holder}; "
                f"{_running_batches(runtime)}. Wait for it to finish, then run again (the lock goes with that "
                "process: if it crashed, just run again)") from None

        def confirm() -> None:
            try:
                confirm_held()
            except LockLostError as exc:
                raise IngestLockLostError(
                    f"{exc} while the batch ran; nothing of this batch was committed. Run the ingest again") from exc

        yield confirm
