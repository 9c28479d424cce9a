"""The human-review step: wait for a reviewer's typed decision, with a timeout and a configured default.

A local run (no deployment) pauses: the process keeps waiting and polls. A deployed run suspends: its
process exits and frees the worker; the review action resumes it, the flow runs again from the top, the
finished tasks return their persisted results, and ``suspend_flow_run`` (same key) returns the decision.
Prefect refuses to suspend a run without a deployment, hence the two ways.

A run on Prefect's temporary local API (``lmforge nightly`` with no ``PREFECT_API_URL``) cannot be reached by
another process, so no one could resume it: it waits on the metadata store instead, where the dashboard and
``lmforge review`` record the decision (``decision_in_store``), polling every ``poll_interval_s``.

Whichever way the decision arrives, the flow then makes sure it is in the store: the CLI and the dashboard
record before they resume; a resume through Prefect's UI or API records nothing, so the flow records it
(``record_received_review``, source ``prefect``), once.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run, suspend_flow_run
from prefect.runtime import deployment, flow_run
from prefect.settings import PREFECT_API_URL

from lmforge_core.runtime import Runtime
from tasks.review.run_input import ReviewInput
from tasks.review.waiting import decision_in_store, open_request, record_received_review, record_timeout

open_request_task = task(open_request, name="open-review-request", cache_policy=NO_CACHE, retries=2,
                         retry_delay_seconds=[2, 8])
record_received_task = task(record_received_review, name="record-review-decision", cache_policy=NO_CACHE,
                            retries=2, retry_delay_seconds=[2, 8])
record_timeout_task = task(record_timeout, name="review-timeout-default", cache_policy=NO_CACHE, retries=2,
                           retry_delay_seconds=[2, 8])


def _wait_in_store(rt: Runtime, request_id: int, timeout_s: int, poll_s: int) -> ReviewInput:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        decided = decision_in_store(rt, request_id)
        if decided is not None:
            return ReviewInput(**decided)
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
    raise FlowPauseTimeout(f"no review of request {request_id} within {timeout_s} s")


def _wait(rt: Runtime, request_id: int, timeout_s: int, poll_s: int) -> ReviewInput:
    key = f"review-{request_id}"
    if deployment.id is not None:
        return suspend_flow_run(wait_for_input=ReviewInput, timeout=timeout_s, key=key)
    if not PREFECT_API_URL.value():
        return _wait_in_store(rt, request_id, timeout_s, poll_s)
    return pause_flow_run(wait_for_input=ReviewInput, timeout=timeout_s, poll_interval=poll_s, key=key)


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
    logger.info("review of %s: %s by %s (%s)", request["model"], answer.decision, answer.reviewer,
                "received through Prefect; recorded by this run" if recorded else "recorded by the reviewer's tool")
    return {"decision": answer.decision, "reviewer": answer.reviewer, "comment": answer.comment,
            "request_id": request["request_id"], "timed_out": False, "recorded_by_flow": recorded}
