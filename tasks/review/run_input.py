"""The Prefect side of a review: what a paused/suspended flow run waits for, and how it is resumed.

A flow waits with ``pause_flow_run(wait_for_input=ReviewInput, ...)`` (or ``suspend_flow_run``); the review
action resumes it with the decision once it is recorded in the metadata store.
"""

from __future__ import annotations

import time
from typing import Literal
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.flow_runs import resume_flow_run
from prefect.input import RunInput
from pydantic import Field

from tasks.review.actions import MAX_ACTOR, MAX_COMMENT


class ReviewInput(RunInput):
    """A reviewer's decision as the waiting flow run receives it. Its JSON schema is what Prefect's UI shows
    as the resume form and what the server checks a resume's input against, so the bounds the store
    accepts are declared here: a bad input is refused at the resume, and the run stays suspended."""

    decision: Literal["approve", "reject"]
    reviewer: str = Field(min_length=1, max_length=MAX_ACTOR, pattern=r"\S", description="who decides")
    comment: str = Field("", max_length=MAX_COMMENT, description="why (kept with the review and its audit event)")


def _until_paused(run_id: UUID, wait_s: float) -> None:
    """A run opens its review request a moment before it pauses: a decision given in between waits for the
    pause (at most ``wait_s``) instead of finding a running run it cannot resume."""
    deadline = time.monotonic() + wait_s
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run_id).state
        while state is not None and (state.is_running() or state.is_pending()) and time.monotonic() < deadline:
            time.sleep(0.5)
            state = client.read_flow_run(run_id).state


def resume_with_review(flow_run_id: str, review: ReviewInput, wait_s: float = 30) -> None:
    """Resume the paused flow run ``flow_run_id`` with ``review`` as its run input (a run still on its way
    to the pause is waited for, up to ``wait_s``).

    Raises Prefect's ``NotPausedError`` when the run is not paused (finished, timed out, resumed already)
    and ``ValueError`` when the id is not a flow run id.
    """
    try:
        run_id = UUID(flow_run_id)
    except ValueError as exc:
        raise ValueError(f"review request names flow run {flow_run_id!r}, which is not a flow run id") from exc
    _until_paused(run_id, wait_s)
    resume_flow_run(run_id, run_input=review.model_dump())
