"""Queries the orchestration needs to pick up where a night stopped: which dataset version still waits for
its training, which run of it can be resumed, and which review request a flow run already opened.

Same contract as :mod:`lmforge_core.metadata.repository`: every function takes the caller's session and
never commits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from lmforge_core.metadata.models import (
    Checkpoint,
    DatasetVersion,
    ModelVersion,
    ReviewRequest,
    RunStatus,
    TrainingRun,
)
from lmforge_core.metadata.repository import latest_dataset_version


def succeeded_run_for_dataset(session: Session, dataset_version_id: int) -> TrainingRun | None:
    """The latest training run on this dataset version that finished and registered a model."""
    stmt = (select(TrainingRun)
            .where(TrainingRun.dataset_version_id == dataset_version_id, TrainingRun.status == RunStatus.SUCCEEDED)
            .order_by(TrainingRun.id.desc()).limit(1))
    return session.scalars(stmt).first()


def resumable_run_for_dataset(session: Session, dataset_version_id: int) -> TrainingRun | None:
    """The latest unfinished (failed, interrupted, or left running by a killed process) run on this dataset
    version that recorded at least one checkpoint, when no later run on it succeeded."""
    if succeeded_run_for_dataset(session, dataset_version_id) is not None:
        return None
    stmt = (select(TrainingRun)
            .where(TrainingRun.dataset_version_id == dataset_version_id,
                   TrainingRun.status.in_((RunStatus.FAILED, RunStatus.INTERRUPTED, RunStatus.RUNNING)),
                   select(Checkpoint.id).where(Checkpoint.run_id == TrainingRun.id).exists())
            .order_by(TrainingRun.id.desc()).limit(1))
    return session.scalars(stmt).first()


def latest_untrained_dataset(session: Session) -> DatasetVersion | None:
    """The latest ingested dataset version, when no training run on it has succeeded yet (else None)."""
    latest = latest_dataset_version(session)
    if latest is None or succeeded_run_for_dataset(session, latest.id) is not None:
        return None
    return latest


def cut_off_training(session: Session, owner_alive: Callable[[dict[str, Any] | None], bool | None]) -> TrainingRun | None:
    """The latest run on the latest untrained dataset version when it was cut off rather than failed: stopped
    by Ctrl-C (INTERRUPTED), or left RUNNING by a process that is gone (``owner_alive`` of its recorded
    ``owner`` is False; None, "cannot tell here", counts as alive). None otherwise."""
    latest = latest_untrained_dataset(session)
    if latest is None:
        return None
    run = session.scalars(select(TrainingRun).where(TrainingRun.dataset_version_id == latest.id)
                          .order_by(TrainingRun.id.desc()).limit(1)).first()
    if run is None or run.status not in (RunStatus.INTERRUPTED, RunStatus.RUNNING):
        return None
    if run.status is RunStatus.RUNNING and owner_alive((run.config or {}).get("owner")) is not False:
        return None
    return run


def model_version_of_run(session: Session, run_pk: int) -> ModelVersion | None:
    stmt = select(ModelVersion).where(ModelVersion.training_run_id == run_pk).order_by(ModelVersion.id.desc()).limit(1)
    return session.scalars(stmt).first()


def review_request_of_flow_run(session: Session, model_version_id: int, flow_run_id: str) -> ReviewRequest | None:
    """The review request this flow run opened for this model version, in any state."""
    stmt = (select(ReviewRequest)
            .where(ReviewRequest.model_version_id == model_version_id, ReviewRequest.flow_run_id == flow_run_id)
            .order_by(ReviewRequest.id.desc()).limit(1))
    return session.scalars(stmt).first()
