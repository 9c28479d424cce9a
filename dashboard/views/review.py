"""Review and registry: models awaiting review with their gate table, approve/reject with a comment,
promote and roll back production (each after a confirmation step), and the alias history."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboard import auth, charts, data
from dashboard.context import Context
from dashboard.ui import empty_state, run_page, when
from lmforge_core.metadata import review_repository as reviews
from lmforge_core.metadata.models import ReviewDecision
from lmforge_core.metadata.repository import NotFoundError
from tasks.review import ReviewRefusedError, apply_review, promote, rollback_production

CONFIRM, RESULT = "review_confirm", "review_result"
GATE_COLUMNS = ["name", "metric", "value", "bound", "kind", "passed", "verdict", "detail"]


def _request(ctx: Context, user: str | None, action: str, model: str | None, note: str, *,
             target: str | None = None, promote: bool = False) -> None:
    """A button was pressed: refuse it without a reviewer, else ask for confirmation on the next rerun."""
    if user is None:
        _refuse(ctx, action, model or target)
        return
    st.session_state[CONFIRM] = {"action": action, "model": model, "note": note, "promote": promote}
    st.rerun()


def _refuse(ctx: Context, action: str, target: str | None) -> None:
    """An action tried without a signed-in reviewer: nothing changes, the attempt is audited."""
    with ctx.runtime.metadata.session() as session:
        reviews.record_audit(session, actor="anonymous", action=f"refused.{action}", target=target or "",
                             source="dashboard", details={"why": "not signed in"})
    st.error(f"Only a signed-in reviewer can {action}; nothing was changed. Sign in from the sidebar.")


def _perform(ctx: Context, user: str, ask: dict[str, Any]) -> str:
    action, model, note = ask["action"], ask["model"], ask["note"]
    rt = ctx.runtime
    if action in ("approve", "reject"):
        outcome = apply_review(rt, model_ref=model, decision=ReviewDecision(action), reviewer=user, comment=note,
                               source="dashboard")
        message = f"{outcome.model} {action}d by {user}."
        if outcome.flow_run_id:
            if outcome.resumed:
                message += " The waiting flow run was resumed."
            elif outcome.resume_error is None:
                message += " The waiting local flow run reads the decision from the metadata store."
            else:
                message += f" The waiting flow run could not be resumed: {outcome.resume_error}"
        if action == "approve" and ask.get("promote"):
            move = promote(rt, model_ref=model, actor=user, reason=note or "approved in review", source="dashboard")
            message += f" Production is now {move.model} (was {move.previous or 'none'})."
        return message
    if action == "promote":
        move = promote(rt, model_ref=model, actor=user, reason=note, source="dashboard")
        return f"Production is now {move.model} (was {move.previous or 'none'})."
    move = rollback_production(rt, actor=user, reason=note, source="dashboard")
    return f"Rolled back: production is now {move.model} (was {move.previous})."


def _confirmation(ctx: Context, user: str | None) -> None:
    ask = st.session_state.get(CONFIRM)
    if not ask:
        return
    what = {"approve": "Approve", "reject": "Reject", "promote": "Promote to production",
            "rollback": "Roll back production"}[ask["action"]]
    extra = " and make it production" if ask.get("promote") else ""
    st.warning(f"{what}: {ask['model'] or 'the current production model'}{extra}? Comment: {ask['note'] or '(none)'}")
    yes, no = st.columns(2)
    if no.button("Cancel", key="confirm_no"):
        del st.session_state[CONFIRM]
        st.rerun()
    if yes.button("Confirm", key="confirm_yes", type="primary"):
        del st.session_state[CONFIRM]
        if user is None:
            _refuse(ctx, ask["action"], ask["model"])
            return
        try:
            st.session_state[RESULT] = ("success", _perform(ctx, user, ask))
        except (ReviewRefusedError, NotFoundError) as exc:
            st.session_state[RESULT] = ("error", str(exc))
        data.clear()
        st.rerun()


def _gate_table(decision: dict[str, Any] | None) -> None:
    if decision is None:
        st.caption("No gate decision recorded.")
        return
    st.caption(f"Gate verdict **{decision['verdict']}** ({when(decision['created_at'])})")
    checks = pd.DataFrame(decision["checks"] or [], columns=GATE_COLUMNS)
    st.dataframe(checks, hide_index=True, width="stretch",
                 column_config={"passed": st.column_config.CheckboxColumn("passed")})


def _pending(ctx: Context, user: str | None) -> None:
    st.subheader("Awaiting review")
    waiting = data.pending(ctx.url, ctx.model, 50)
    if not waiting:
        empty_state("models awaiting review", "The promotion gate asks for one when a check needs a person.")
        return
    gates = data.gate_decisions(ctx.url, tuple(p["model_version_id"] for p in waiting))
    for request in waiting:
        rid, label = request["id"], request["label"]
        with st.container(border=True):
            st.markdown(f"**{label}** · requested {when(request['requested_at'])} · {request['reason']}")
            if request["flow_run_id"]:
                st.caption(f"Flow run {request['flow_run_id']} waits for this decision.")
            _gate_table(gates.get(request["model_version_id"]))
            comment = st.text_area("Comment", key=f"comment_{rid}", max_chars=4000)
            then_promote = not request["flow_run_id"] and st.checkbox(
                "Promote to production once approved", value=True, key=f"promote_{rid}")
            approve, reject = st.columns(2)
            for column, action in ((approve, "approve"), (reject, "reject")):
                if column.button(action.capitalize(), key=f"{action}_{rid}"):
                    _request(ctx, user, action, label, comment, promote=bool(then_promote) and action == "approve")


def _registry(ctx: Context, user: str | None) -> None:
    st.subheader("Model versions")
    models = data.models(ctx.url, ctx.model, ctx.limit)
    if models.empty:
        empty_state("model versions", "`lmforge train` registers one per finished run.")
        return
    gates = data.gate_decisions(ctx.url, tuple(models["id"].tolist()))
    models["gate"] = models["id"].map(lambda i: gates.get(i, {}).get("verdict", "-"))
    st.dataframe(models[["label", "status", "gate", "created_at", "run_id"]], hide_index=True, width="stretch")
    eligible = models[(models["status"] == "approved") | ((models["status"] == "candidate") & (models["gate"] == "promote"))]
    left, right = st.columns(2)
    with left:
        if eligible.empty:
            st.caption("No version is approved or passed the gate for promotion.")
        else:
            chosen = st.selectbox("Version to promote", eligible["label"].tolist(), key="promote_choice")
            reason = st.text_input("Reason", key="promote_reason", max_chars=500)
            if st.button("Promote…", key="promote"):
                _request(ctx, user, "promote", chosen, reason)
    with right:
        production = data.production(ctx.url, ctx.model)
        if production is None:
            st.caption("Nothing serves yet: there is nothing to roll back.")
            return
        why = st.text_input("Why roll back", key="rollback_reason", max_chars=500)
        if st.button(f"Roll back {production['label']}…", key="rollback"):
            _request(ctx, user, "rollback", None, why, target=production["label"])


def _history(ctx: Context) -> None:
    st.subheader("Production alias history (what served when)")
    history = data.alias_history(ctx.url, ctx.model, ctx.limit)
    if history.empty:
        empty_state("promotions", "The first promotion starts the history.")
        return
    st.altair_chart(charts.served_timeline(history.dropna(subset=["version"])), width="stretch")
    st.dataframe(history, hide_index=True, width="stretch")
    recent = data.reviews(ctx.url, ctx.model, 50)
    if not recent.empty:
        st.caption("Recent reviews")
        st.dataframe(recent, hide_index=True, width="stretch")


def render(ctx: Context) -> None:
    user = auth.current_user(ctx)
    result = st.session_state.pop(RESULT, None)
    if result is not None:
        (st.success if result[0] == "success" else st.error)(result[1])
    if user is None:
        st.info("Reading only. Sign in as a reviewer (sidebar) to approve, reject, promote or roll back.")
    _confirmation(ctx, user)
    _pending(ctx, user)
    _registry(ctx, user)
    _history(ctx)


run_page("Review and registry", render)
