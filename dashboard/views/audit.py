"""Audit: every review action, promotion, rollback and login, newest first, with who did it."""

from __future__ import annotations

import streamlit as st

from dashboard import data
from dashboard.context import Context
from dashboard.ui import empty_state, run_page

FILTERS = {"everything": None, "reviews": "review.", "promotions and rollbacks": "model.", "logins": "login",
           "refused actions": "refused."}


def render(ctx: Context) -> None:
    choice = st.selectbox("Show", list(FILTERS), key="audit_filter")
    events = data.audit(ctx.url, ctx.limit, FILTERS[choice])
    if events.empty:
        empty_state("audited actions", "Reviews, promotions, rollbacks and logins appear here as they happen.")
        return
    st.caption(f"The newest {len(events)} events (at most {ctx.limit}).")
    st.dataframe(events, hide_index=True, width="stretch",
                 column_config={"at": st.column_config.DatetimeColumn("at", format="YYYY-MM-DD HH:mm:ss")})


run_page("Audit", render)
