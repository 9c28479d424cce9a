"""One night's training step, idempotent on the metadata store: train a dataset version once.

- a run on this dataset version already succeeded: its result is returned (nothing is trained twice);
- a run on it stopped after a checkpoint (killed, failed, interrupted): it is resumed from that checkpoint;
- otherwise a new continual run starts from the production model (or scratch when there is none).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lmforge_core.metadata import orchestration_repository as orch
from lmforge_core.metadata import repository as repo
from lmforge_core.runtime import Runtime
from tasks.train.run import PRODUCTION, TrainResult, resume_training, run_training

Progress = Callable[[dict[str, Any]], None]


def _finished(runtime: Runtime, dataset_pk: int) -> TrainResult | None:
    with runtime.metadata.session() as session:
        run = orch.succeeded_run_for_dataset(session, dataset_pk)
        if run is None:
            return None
        model = orch.model_version_of_run(session, run.id)
        checkpoint = repo.latest_checkpoint(session, run.id)
        return TrainResult(run_id=run.run_id, status="succeeded", model_version=model.label if model else None,
                           run_dir=str(runtime.settings.workspace / "runs" / run.run_id),
                           checkpoint_key=checkpoint.artifact_key if checkpoint else None,
                           summary=dict(run.summary or {}) | {"reused": True})


def train_dataset_once(runtime: Runtime, dataset: str, *, steps: int | None = None, processes: int | None = None,
                       source: str = PRODUCTION, progress: Progress | None = None) -> TrainResult:
    """Train on ``dataset`` unless a run on it succeeded; resume a stopped run from its checkpoint."""
    with runtime.metadata.session() as session:
        dataset_pk = repo.get_dataset_version(session, dataset).id
        resumable = orch.resumable_run_for_dataset(session, dataset_pk)
        resumable_id = resumable.run_id if resumable is not None else None
    done = _finished(runtime, dataset_pk)
    if done is not None:
        return done
    if resumable_id is not None:
        if progress:
            progress({"type": "resume", "run_id": resumable_id})
        return resume_training(runtime, resumable_id, processes=processes, progress=progress)
    return run_training(runtime, dataset=dataset, steps=steps, source=source, processes=processes,
                        progress=progress)
