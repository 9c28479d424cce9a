"""How the stages' Prefect tasks retry, time out and cache: one definition for every stage.

- Retries only for transient failures: an unreachable artifact store (S3), a dropped or refused database
  connection, a connection error to a server (Triton). A bad input or a bug fails at once.
- Cache keys from input hashes: the stores a task writes to (so two workspaces never share a result) plus
  the named inputs that decide its result. With persisted results, a re-run of the same flow run (a retry
  after a crash, a resumed suspended run) finds the finished tasks' results instead of redoing them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError

from lmforge_core.artifacts.base import ArtifactStoreUnavailable
from lmforge_core.config.orchestration import OrchestrationConfig
from lmforge_core.runtime import Runtime
from lmforge_core.settings import Settings

# a MetadataStoreError caused by a lost connection counts through its cause (OperationalError).
TRANSIENT = (ArtifactStoreUnavailable, OperationalError, InterfaceError, ConnectionError, TimeoutError)


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def is_transient(exc: BaseException | None) -> bool:
    """True when ``exc`` (or what caused it) is an outage a later attempt may not meet."""
    return any(isinstance(e, TRANSIENT) for e in _chain(exc))


def _failure(state: Any) -> BaseException | None:
    try:
        state.result(raise_on_failure=True)
    except BaseException as exc:  # the state's own exception, re-raised by Prefect
        return exc
    return None


def retry_when_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry a failed attempt only when its failure was transient."""
    return is_transient(_failure(state))


def retry_options(cfg: OrchestrationConfig, timeout_s: int,
                  condition: Callable[[Any, Any, Any], bool] = retry_when_transient) -> dict[str, Any]:
    """``Task.with_options`` keywords: retries with exponential backoff (from the settings) and a timeout."""
    retry = cfg.retry
    return {
        "retries": retry.retries,
        "retry_delay_seconds": [retry.backoff_s * 2**i for i in range(retry.retries)] or 0,
        "retry_jitter_factor": retry.jitter_factor or None,
        "retry_condition_fn": condition,
        "timeout_seconds": timeout_s,
    }


def store_fingerprint(settings: Settings) -> str:
    """Identity of the stores a task writes to; part of every cache key."""
    text = "\n".join((settings.database_url, settings.artifact_uri, settings.model_name))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def input_hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def cache_key_from(*names: str, per_run: bool = False) -> Callable[[Any, dict[str, Any]], str]:
    """A Prefect ``cache_key_fn``: the task's name, the store fingerprint of its ``runtime`` parameter and the
    values of the parameters ``names``; ``per_run`` adds the flow run id (results valid within one run only)."""

    def key(context: Any, parameters: dict[str, Any]) -> str:
        runtime: Runtime = parameters["runtime"]
        run_id = str(context.task_run.flow_run_id) if per_run else ""
        values = [parameters.get(name) for name in names]
        task_name = context.task.name
        return f"{task_name}-{input_hash(store_fingerprint(runtime.settings), run_id, values)}"

    return key


def retry_when_transient_or(*kinds: type[BaseException]) -> Callable[[Any, Any, Any], bool]:
    """A ``retry_condition_fn`` that also retries the failures ``kinds`` (e.g. a killed training process,
    which the next attempt resumes from its checkpoint)."""

    def condition(task: Any, task_run: Any, state: Any) -> bool:
        exc = _failure(state)
        return is_transient(exc) or any(isinstance(e, kinds) for e in _chain(exc))

    return condition
