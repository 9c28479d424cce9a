"""The Prefect side of a review: what a paused/suspended flow run waits for, and how it is resumed.

A flow waits with ``pause_flow_run(wait_for_input=ReviewInput, ...)`` (or ``suspend_flow_run``); the review
action resumes it with the decision once it is recorded in the metadata store.
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

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


def resume_with_review(flow_run_id: str, review: ReviewInput) -> None:
    """Resume the paused flow run ``flow_run_id`` with ``review`` as its run input.

    Raises Prefect's ``NotPausedError`` when the run is not paused (finished, timed out, resumed already)
    and ``ValueError`` when the id is not a flow run id.
    """
    try:
        run_id = UUID(flow_run_id)
    except ValueError as exc:
        raise ValueError(f"review request names flow run {flow_run_id!r}, which is not a flow run id") from exc
    resume_flow_run(run_id, run_input=review.model_dump())
