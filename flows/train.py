"""``train``: continual training of a dataset version (the latest by default), once."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.steps import train_step
from flows.support import open_flow_runtime
from tasks.train.task import untrained_dataset_task


@flow(name="train")
def train(dataset: str | None = None, steps: int | None = None, processes: int | None = None,
          config: str | None = None) -> dict[str, Any] | None:
    """Train ``dataset`` (default: the latest untrained version); None when every version is trained."""
    rt = open_flow_runtime(config)
    try:
        dataset = dataset or untrained_dataset_task(rt)
        return train_step(rt, dataset, steps, processes) if dataset else None
    finally:
        rt.metadata.dispose()
