"""``lmforge review list|approve|reject``: the reviewer's side of the flow's review step, from a shell.

Approve and reject call the one review action (:func:`tasks.review.actions.apply_review`), as the
dashboard's buttons do; the reviewer is the authenticated login user of this shell, never a free option.
A flow run waiting on a Prefect server (PREFECT_API_URL) is resumed with the decision.
"""

from __future__ import annotations

import dataclasses
import getpass
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from flows.cli.common import CliError, emit, runtime

JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
ModelArg = Annotated[str, typer.Argument(help="model version: vN, N or NAME:vN")]
CommentOption = Annotated[str, typer.Option("--comment", help="why (kept with the review and the audit event)")]

review_app = typer.Typer(help="Human review of candidates waiting in a flow run.", no_args_is_help=True)


def _login_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError) as exc:  # no passwd entry, no LOGNAME: nobody to record
        raise CliError("cannot tell who is reviewing: this shell has no login user",
                       "run as a named user, or review from the dashboard") from exc


def _render_pending(c: Console, d: dict[str, Any]) -> None:
    if not d["pending"]:
        c.print("no review is pending")
        return
    table = Table(title="pending reviews")
    for col in ("request", "model", "reason", "flow run", "requested", "deadline"):
        table.add_column(col)
    for r in d["pending"]:
        table.add_row(str(r["request_id"]), r["model"], r["reason"], r["flow_run_id"] or "-", str(r["requested_at"]),
                      str(r["deadline"] or "-"))
    c.print(table)


def _decide(model_version: str, decision: str, comment: str, as_json: bool) -> None:
    from lmforge_core.metadata.models import ReviewDecision
    from tasks.review.actions import ReviewRefusedError, apply_review

    try:
        outcome = apply_review(runtime(), model_ref=model_version, decision=ReviewDecision(decision),
                               reviewer=_login_user(), comment=comment, source="cli")
    except ReviewRefusedError as exc:
        raise CliError(str(exc)) from exc
    data = dataclasses.asdict(outcome)

    def render(c: Console, d: dict[str, Any]) -> None:
        c.print(f"[green]{d['decision']}[/] {d['model']} by {d['reviewer']} (review {d['review_id']})")
        if d["flow_run_id"]:
            if d["resumed"]:
                c.print(f"  flow run {d['flow_run_id']} resumed")
            elif d["resume_error"] is None:
                c.print(f"  flow run {d['flow_run_id']} runs on Prefect's temporary local API: it reads the decision "
                        "from the metadata store within its poll interval")
            else:
                c.print(f"  flow run {d['flow_run_id']} [yellow]not resumed[/]: {d['resume_error']}")

    emit(data, as_json, render)


@review_app.command("list")
def review_list(as_json: JsonFlag = False) -> None:
    """Review requests waiting for a decision."""
    from lmforge_core.metadata import review_repository as reviews
    from lmforge_core.metadata.models import ModelVersion

    rt = runtime()
    with rt.metadata.session() as session:
        pending = [{"request_id": r.id, "model": session.get(ModelVersion, r.model_version_id).label,
                    "reason": r.reason, "flow_run_id": r.flow_run_id, "requested_at": r.requested_at,
                    "deadline": r.deadline}
                   for r in reviews.pending_review_requests(session)]
    emit({"pending": pending}, as_json, _render_pending)


@review_app.command("approve")
def review_approve(model_version: ModelArg, comment: CommentOption = "", as_json: JsonFlag = False) -> None:
    """Approve a candidate (refused when the promotion gate rejected it)."""
    _decide(model_version, "approve", comment, as_json)


@review_app.command("reject")
def review_reject(model_version: ModelArg, comment: CommentOption = "", as_json: JsonFlag = False) -> None:
    """Reject a candidate: the waiting run publishes nothing."""
    _decide(model_version, "reject", comment, as_json)


def register(app: typer.Typer) -> None:
    app.add_typer(review_app, name="review")
