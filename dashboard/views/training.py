"""Training: loss, learning rate, gradient norm and throughput per run, overlaid, with events marked."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, data
from dashboard.context import Context
from dashboard.ui import empty_state, run_page

MAX_POINTS = 500
TITLES = {"loss": "Loss", "lr": "Learning rate", "grad_norm": "Gradient norm", "tokens_per_s": "Throughput (tokens/s)"}


def _marks(ctx: Context, runs: pd.DataFrame, series: pd.DataFrame) -> pd.DataFrame:
    """Checkpoints, resumes (first step of a resumed run), spikes and rollbacks of the chosen runs."""
    names = dict(zip(runs["id"], runs["run_id"], strict=True))
    rows = [{"run": names[c.run_id], "event": "checkpoint", "step": c.step, "detail": c.artifact_key}
            for c in data.checkpoints(ctx.url, tuple(names), 2000).itertuples()]
    for run in runs[runs["resumed_from_id"].notna()].itertuples():
        steps = series.loc[series["run_id"] == run.id, "step"]
        if len(steps):
            rows.append({"run": run.run_id, "event": "resume", "step": int(steps.min()), "detail": "resumed"})
    for pk, summary in data.run_summaries(ctx.url, tuple(names)).items():
        for incident in (summary.get("incidents") or [])[:200]:
            kind = incident.get("type")
            step = incident.get("step", incident.get("to_step"))
            if kind in ("spike", "rollback") and step is not None:
                detail = f"loss {incident['loss']:.3g}" if "loss" in incident else f"to {incident.get('tag', '')}"
                rows.append({"run": names[pk], "event": kind, "step": int(step), "detail": detail})
    return pd.DataFrame(rows, columns=["run", "event", "step", "detail"])


def render(ctx: Context) -> None:
    runs = data.runs(ctx.url, ctx.limit)
    if runs.empty:
        empty_state("training runs", "Run `lmforge train` to record one.")
        return
    chosen = st.multiselect("Runs", runs["run_id"].tolist(), default=runs["run_id"].head(3).tolist(),
                            key="train_runs", max_selections=12)
    picked = runs[runs["run_id"].isin(chosen)]
    if picked.empty:
        st.info("Choose one or more runs to overlay their curves.")
        return
    series = data.metrics(ctx.url, tuple(picked["id"].tolist()), MAX_POINTS)
    if series.empty:
        empty_state("step metrics for these runs", "Metrics are written while a run trains.")
        return
    series["run"] = series["run_id"].map(dict(zip(picked["id"], picked["run_id"], strict=True)))
    marks = _marks(ctx, picked, series)
    for tab, (metric, title) in zip(st.tabs(list(TITLES.values())), TITLES.items(), strict=True):
        with tab:
            one = series[series["name"] == metric]
            if one.empty:
                st.info(f"No {title.lower()} recorded for these runs.")
            else:
                st.altair_chart(charts.training_curves(one, marks, title), width="stretch")
    st.subheader("Runs")
    st.dataframe(picked.drop(columns=["id"]), hide_index=True, width="stretch")
    if not marks.empty:
        st.caption("Events marked on the curves")
        st.dataframe(marks, hide_index=True, width="stretch")


run_page("Training", render)
