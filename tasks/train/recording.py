"""Turns training events into records: step metrics in batches, checkpoints uploaded with sha256."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmforge_core.fileio import sha256_file
from lmforge_core.metadata import repository as repo
from lmforge_core.runtime import Runtime
from model.checkpointing import MANIFEST
from model.job import JOB_FILE

RUN_FILES = (JOB_FILE, "plan.npy", "plan_sources.json", "regularizer.safetensors")
STEP_METRICS = ("loss", "lr", "grad_norm", "tokens_per_s", "mfu", "penalty", "step_time")


def checkpoint_prefix(run_id: str, tag: str) -> str:
    return f"runs/{run_id}/checkpoints/{tag}"


def upload_tree(runtime: Runtime, folder: Path, prefix: str) -> dict[str, str]:
    """Upload every file of ``folder`` under ``prefix``; returns {relative path: sha256}."""
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        out[rel] = runtime.artifacts.put_file(f"{prefix}/{rel}", path).sha256
    return out


class Recorder:
    """Receives events (in-line callback or tailed ``events.jsonl``) and writes them to the stores."""

    def __init__(self, runtime: Runtime, run_id: str, run_pk: int, flush_every: int,
                 progress: Callable[[dict[str, Any]], None] | None, run_dir: Path) -> None:
        self.runtime, self.run_id, self.run_pk = runtime, run_id, run_pk
        self.flush_every = flush_every
        self.progress = progress
        self.run_dir = run_dir
        self.pending: list[tuple[int, str, float]] = []
        self.checkpoints: list[dict[str, Any]] = []
        self.incidents: list[dict[str, Any]] = []
        self.last_step: dict[str, Any] | None = None
        self.start: dict[str, Any] | None = None
        self.done: dict[str, Any] | None = None

    def handle(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "start":
            self.start = event
            self._store_run_files()
        elif kind == "step":
            self.last_step = event
            self.pending += [(event["step"], name, event[name]) for name in STEP_METRICS
                             if event.get(name) is not None]
            if event["step"] % self.flush_every == 0:
                self.flush()
        elif kind in ("spike", "rollback"):
            self.incidents.append(event)
        elif kind == "checkpoint":
            self.flush()
            self._record_checkpoint(event)
        elif kind == "done":
            self.flush()
            self.done = event
        if self.progress is not None:
            self.progress(event)

    def _store_run_files(self) -> None:
        """What rebuilding the run needs besides a checkpoint: its job configuration, data plan and regulariser."""
        for name in RUN_FILES:
            if (self.run_dir / name).is_file():
                self.runtime.artifacts.put_file(f"runs/{self.run_id}/{name}", self.run_dir / name)

    def flush(self) -> None:
        if not self.pending:
            return
        with self.runtime.metadata.session() as session:
            repo.add_step_metrics(session, self.run_pk, self.pending)
        self.pending = []

    def _record_checkpoint(self, event: dict[str, Any]) -> None:
        folder = Path(event["path"])
        prefix = checkpoint_prefix(self.run_id, event["tag"])
        upload_tree(self.runtime, folder, prefix)
        key = f"{prefix}/{MANIFEST}"
        with self.runtime.metadata.session() as session:
            repo.add_checkpoint(session, run_pk=self.run_pk, step=event["step"], artifact_key=key,
                                sha256=sha256_file(folder / MANIFEST))
        self.checkpoints.append({"step": event["step"], "tag": event["tag"], "key": key})
