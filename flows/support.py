"""What every flow needs around its stages: the runtime, the global training limit, the catch-up policy,
and which optional stages are installed. Orchestration only; no stage logic lives here."""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.runtime import deployment, flow_run

from lmforge_core.config.orchestration import OrchestrationConfig
from lmforge_core.metadata.review_repository import record_audit
from lmforge_core.runtime import Runtime, open_runtime
from lmforge_core.settings import load_settings


def open_flow_runtime(config: str | None) -> Runtime:
    """The flow's one settings object (``config``: an lmforge.toml path, else the usual precedence)."""
    return open_runtime(load_settings(config))


def ensure_training_limit(cfg: OrchestrationConfig) -> None:
    """Create (or resize) the global concurrency limit every training holds a slot of."""
    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(cfg.training_limit)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=cfg.training_limit, limit=cfg.training_slots))
            except ObjectAlreadyExists:  # another run created it first
                pass
            return
        if limit.limit != cfg.training_slots or not limit.active:
            client.update_global_concurrency_limit(
                cfg.training_limit, GlobalConcurrencyLimitUpdate(limit=cfg.training_slots, active=True))


# a later night of the deployment that will run (scheduled, waiting for its slot, running), waits for a review,
# or ran: each takes every shard that arrived before it, so an earlier night has nothing of its own to do.
SUPERSEDING_STATES = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.PAUSED,
                      StateType.COMPLETED]


def superseded_by(cfg: OrchestrationConfig) -> str | None:
    """Under the "latest" catch-up policy, the id of a later night of this deployment that is already due
    (so this missed night ends as a no-op); None for manual runs, the "all" policy, or the newest night."""
    deployment_id, mine = deployment.id, flow_run.scheduled_start_time
    if cfg.catchup != "latest" or deployment_id is None or mine is None:
        return None
    with get_client(sync_client=True) as client:
        later = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=SUPERSEDING_STATES)),
                expected_start_time=FlowRunFilterExpectedStartTime(after_=mine, before_=datetime.now(UTC))),
            limit=5)
    newer = [run for run in later if str(run.id) != str(flow_run.id) and run.expected_start_time
             and run.expected_start_time > mine]
    return str(newer[0].id) if newer else None


def catch_up(runtime: Runtime) -> str | None:
    """This night's catch-up decision: the later night that supersedes it (recorded in the metadata store as
    an audit event ``night.superseded``), or None when it runs. The nightly flow asks once per flow run
    (a persisted, per-run task), so a run resumed after a review keeps the decision it started with."""
    later = superseded_by(runtime.settings.orchestration)
    if later is None:
        return None
    mine = flow_run.scheduled_start_time
    get_run_logger().info("catch-up policy 'latest': the night of %s is superseded by flow run %s", mine, later)
    with runtime.metadata.session() as session:
        record_audit(session, actor="lmforge:flow", action="night.superseded", target=f"flow run {flow_run.id}",
                     source="flow", details={"superseded_by": later, "scheduled": str(mine), "policy": "latest"})
    return later


def stage_installed(module: str) -> bool:
    """Whether an optional stage's Prefect tasks exist in this installation (evaluate, publish)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False
