"""Prefect entry points of the review stage: thin wrappers over :mod:`tasks.review.actions`."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from lmforge_core.metadata import repository as repo
from lmforge_core.runtime import Runtime
from tasks.review.actions import promote


# NO_CACHE: Prefect's default cache key hashes the inputs, and a Runtime (its MetadataStore) cannot be hashed:
# it logged an ERROR with a traceback in every published night (issue 21). The task is idempotent by itself.
@task(name="promote", retries=0, timeout_seconds=300, cache_policy=NO_CACHE)
def promote_task(runtime: Runtime, model_version: str, reason: str, actor: str = "lmforge:nightly") -> dict[str, Any]:
    """Make the night's approved candidate the ``production`` model (the champion the next night continues
    from and is compared with). A re-run after a crash finds it already production and changes nothing."""
    name, _, number = model_version.rpartition(":v")
    with runtime.metadata.session() as session:
        current = repo.get_alias(session, name, repo.PRODUCTION)
        already = current is not None and current.version == int(number)
    if already:
        get_run_logger().info("%s is already the production model", model_version)
        return {"model": model_version, "previous": None, "moved": False}
    move = promote(runtime, model_ref=model_version, actor=actor, reason=reason, source="flow")
    get_run_logger().info("production: %s -> %s", move.previous, move.model)
    return {"model": move.model, "previous": move.previous, "moved": True}
