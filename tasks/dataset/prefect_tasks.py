"""Prefect entry point of the dataset stage: which tokenized dataset version the next training uses."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from lmforge_core.runtime import Runtime
from tasks.dataset.versions import dataset_versions


@task(name="dataset-versions", cache_policy=NO_CACHE)
def dataset_versions_task(runtime: Runtime) -> list[dict[str, Any]]:
    return dataset_versions(runtime)
