"""The human-review step: wait for a reviewer's typed decision, with a timeout and a configured default.

A local run (no deployment) pauses: the process keeps waiting and polls. A deployed run suspends: its
process exits and frees the worker; the review action resumes it, the flow runs again from the top, the
finished tasks return their persisted results, and ``suspend_flow_run`` (same key) returns the decision.
Prefect refuses to suspend a run without a deployment, hence the two ways.

A run on a temporary local API (``lmforge nightly`` with no ``PREFECT_API_URL``: flows/temporary_server.py, or
Prefect's own) cannot be reached by another process, so no one could resume it: it waits on the metadata
store instead, where the dashboard and ``lmforge review`` record the decision (``decision_in_store``),
polling every ``poll_interval_s``.

A suspended run has no process to time out in: before it suspends it schedules a run of the
``review-deadline`` deployment at its deadline, which applies the configured default if nobody has decided
and resumes it; the suspension itself lasts ``DEADLINE_GRACE_S`` longer, so the run is still there to resume.
Without that deployment the run says so, and times out unresumed (Prefect fails it). A paused run does the
same from a thread of its own process (``_pause``): a pause that Prefect lets time out is failed by the
server ("paused and never resumed") even though the run goes on to publish.

Whichever way the decision arrives, the flow then makes sure it is in the store: the CLI and the dashboard
record before they resume; a resume through Prefect's UI or API records nothing, so the flow records it
(``record_received_review``, source ``prefect``), once.
"""

from __future__ import annotations

import contextvars
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.deployments import run_deployment
from prefect.exceptions import FlowPauseTimeout, ObjectNotFound
from prefect.flow_runs import pause_flow_run, suspend_flow_run
from prefect.runtime import deployment, flow_run
from prefect.settings import PREFECT_API_URL

from flows.support import open_flow_runtime
from flows.temporary_server import is_temporary_api
from lmforge_core.runtime import Runtime
from tasks.review.run_input import ReviewInput
from tasks.review.waiting import (
    TIMEOUT_REVIEWER,
    apply_default_at_deadline,
    decision_in_store,
    open_request,
    record_received_review,
    record_timeout,
)

DEADLINE_DEPLOYMENT = "review-deadline/review-deadline"
DEADLINE_GRACE_S = 600  # the suspension outlasts the deadline run's start (a worker's poll, a process start)
PAUSE_GRACE_S = 120  # the pause outlasts the deadline thread's default and resume

open_request_task = task(open_request, name="open-review-request", cache_policy=NO_CACHE, retries=2,
                         retry_delay_seconds=[2, 8])
record_received_task = task(record_received_review, name="record-review-decision", cache_policy=NO_CACHE,
                            retries=2, retry_delay_seconds=[2, 8])
record_timeout_task = task(record_timeout, name="review-timeout-default", cache_policy=NO_CACHE, retries=2,
                           retry_delay_seconds=[2, 8])
deadline_default_task = task(apply_default_at_deadline, name="review-deadline-default", cache_policy=NO_CACHE,
                             retries=2, retry_delay_seconds=[2, 8])


@flow(name="review-deadline")
def review_deadline(request_id: int, config: str | None = None) -> dict[str, str] | None:
    """At a suspended run's review deadline: the configured default, unless somebody decided first."""
    rt = open_flow_runtime(config)
    try:
        cfg = rt.settings.orchestration.review
        decided = deadline_default_task(rt, request_id, cfg.default, cfg.timeout_s)
        get_run_logger().info("review request %d: %s", request_id,
                              "decided before its deadline" if decided is None else f"default {decided['decision']}")
        return decided
    finally:
        rt.metadata.dispose()


def deadline_key(flow_run_id: str, request_id: int) -> str:
    """The deadline run's idempotency key: request ids are per metadata store, and one Prefect server may serve
    several stores, so the waiting run's id is part of it."""
    return f"review-deadline/{flow_run_id}/{request_id}"


def _schedule_deadline(rt: Runtime, request_id: int, timeout_s: int) -> bool:
    """One run of the deadline deployment at the deadline (the idempotency key keeps a resumed run, which
    passes here again, from scheduling a second). False when the deployment is not registered."""
    config = str(rt.settings.config_file) if rt.settings.config_file else None
    try:
        run_deployment(DEADLINE_DEPLOYMENT, parameters={"request_id": request_id, "config": config}, timeout=0,
                       scheduled_time=datetime.now(UTC) + timedelta(seconds=timeout_s), as_subflow=False,
                       idempotency_key=deadline_key(str(flow_run.id), request_id))
    except ObjectNotFound:
        get_run_logger().warning("no %s deployment (`lmforge deploy` registers it): if nobody decides, this run "
                                 "times out suspended and the default (%s) is not applied", DEADLINE_DEPLOYMENT,
                                 rt.settings.orchestration.review.default)
        return False
    return True


def _wait_in_store(rt: Runtime, request_id: int, timeout_s: int, poll_s: int) -> ReviewInput:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        decided = decision_in_store(rt, request_id)
        if decided is not None:
            return ReviewInput(**decided)
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
    raise FlowPauseTimeout(f"no review of request {request_id} within {timeout_s} s")


def _pause(rt: Runtime, request_id: int, timeout_s: int, poll_s: int, key: str) -> ReviewInput:
    """Pause the run (its process keeps waiting) until a reviewer resumes it; at the deadline a thread of this
    process applies the configured default and resumes the run with it, as the deadline run does for a
    suspended one. The pause itself lasts ``PAUSE_GRACE_S`` longer: Prefect's server fails a run whose pause
    times out ("The flow was paused and never resumed"), and a night that goes on to publish must never read
    Failed. Only if that resume fails does the pause time out (FlowPauseTimeout; the caller applies the
    default)."""
    decided = threading.Event()
    default = rt.settings.orchestration.review.default

    def at_deadline() -> None:
        if decided.wait(timeout_s):
            return
        try:  # a plain call, not a task: the run is paused, and Prefect would not start a task in it
            apply_default_at_deadline(rt, request_id, default, timeout_s)
        except Exception as exc:  # the pause then times out, and the caller applies the default
            get_run_logger().warning("could not apply the review default at the deadline: %s: %s",
                                     type(exc).__name__, exc)

    context = contextvars.copy_context()  # the flow run's Prefect settings and run context, in the thread
    timer = threading.Thread(target=context.run, args=(at_deadline,), name=f"review-deadline-{request_id}",
                             daemon=True)
    timer.start()
    try:
        return pause_flow_run(wait_for_input=ReviewInput, timeout=timeout_s + PAUSE_GRACE_S, poll_interval=poll_s,
                              key=key)
    finally:
        decided.set()
        timer.join(timeout=60)


def _wait(rt: Runtime, request_id: int, timeout_s: int, poll_s: int) -> ReviewInput:
    key = f"review-{request_id}"
    if deployment.id is not None:
        grace = DEADLINE_GRACE_S if _schedule_deadline(rt, request_id, timeout_s) else 0
        return suspend_flow_run(wait_for_input=ReviewInput, timeout=timeout_s + grace, key=key)
    api_url = PREFECT_API_URL.value()
    if not api_url or is_temporary_api(api_url):
        return _wait_in_store(rt, request_id, timeout_s, poll_s)
    return _pause(rt, request_id, timeout_s, poll_s, key)


def review_step(rt: Runtime, model_version: str, reason: str) -> dict[str, Any]:
    """Ask for a review of ``model_version`` and wait; returns ``{decision, reviewer, comment, request_id}``."""
    cfg = rt.settings.orchestration.review
    logger = get_run_logger()
    request = open_request_task(rt, model_version, reason, str(flow_run.id), cfg.timeout_s)
    logger.warning("%s waits for review (%s): `lmforge review approve|reject %s --comment ...` within %d s; "
                   "default then: %s", request["model"], reason, request["model"], cfg.timeout_s, cfg.default)
    try:
        answer = _wait(rt, int(request["request_id"]), cfg.timeout_s, cfg.poll_interval_s)
    except FlowPauseTimeout:
        decided = record_timeout_task(rt, int(request["request_id"]), cfg.default, cfg.timeout_s)
        logger.warning("review of %s timed out: %s", request["model"], decided["comment"])
        return decided | {"request_id": request["request_id"], "timed_out": True}
    recorded = record_received_task(rt, int(request["request_id"]), answer.decision, answer.reviewer, answer.comment)
    timed_out = answer.reviewer == TIMEOUT_REVIEWER  # the default, applied at the deadline and resumed with
    logger.info("review of %s: %s by %s (%s)", request["model"], answer.decision, answer.reviewer,
                "received through Prefect; recorded by this run" if recorded
                else answer.comment if timed_out else "recorded by the reviewer's tool")
    return {"decision": answer.decision, "reviewer": answer.reviewer, "comment": answer.comment,
            "request_id": request["request_id"], "timed_out": timed_out, "recorded_by_flow": recorded}
