"""Overview: pipeline runs over time, the production model, the last ingest and the open alerts."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, data
from dashboard.context import Context
from dashboard.ui import ago, empty_state, run_page, when


def _timeline(ctx: Context) -> pd.DataFrame:
    runs = data.runs(ctx.url, ctx.limit)
    batches = data.batches(ctx.url, ctx.limit)
    batch_duration = (pd.to_datetime(batches["finished_at"], utc=True)
                      - pd.to_datetime(batches["started_at"], utc=True)).dt.total_seconds() / 60
    return pd.concat([
        pd.DataFrame({"kind": "train", "name": runs["run_id"], "status": runs["status"],
                      "started_at": runs["started_at"], "duration_min": runs["duration_min"]}),
        pd.DataFrame({"kind": "ingest", "name": "batch-" + batches["id"].astype(str), "status": batches["status"],
                      "started_at": batches["started_at"], "duration_min": batch_duration}),
    ], ignore_index=True)


def _drift_alerts(ctx: Context) -> list[str]:
    gate = ctx.settings.data.gate
    bounds = {"length_jsd": gate.max_length_jsd, "token_jsd": gate.max_token_jsd}
    alerts = []
    for row in data.batches(ctx.url, 20, with_stats=True).itertuples():
        figures = (row.stats or {}).get("figures") or {}
        for name, bound in bounds.items():
            value = figures.get(name)
            if value is not None and value > bound:
                alerts.append(f"batch-{row.id}: drift {name} {value:.3f} over its threshold {bound}")
    return alerts


def _alerts(ctx: Context) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    models = data.models(ctx.url, ctx.model, 50)
    gates = data.gate_decisions(ctx.url, tuple(models["id"].tolist()))
    for row in models.itertuples():
        if gates.get(row.id, {}).get("verdict") == "reject" and row.status not in ("production", "archived"):
            found.append(("error", f"{row.label}: the promotion gate rejected it"))
        elif row.status == "rejected":
            found.append(("warning", f"{row.label}: rejected by a reviewer"))
    found += [("warning", f"{p['label']} awaits review since {when(p['requested_at'])}: {p['reason']}")
              for p in data.pending(ctx.url, ctx.model, 20)]
    found += [("error", f"run {r.run_id} failed ({when(r.started_at)}): {(r.error or '')[:120]}")
              for r in data.failed_runs(ctx.url, 5).itertuples()]
    found += [("warning", text) for text in _drift_alerts(ctx)]
    return found


def render(ctx: Context) -> None:
    production = data.production(ctx.url, ctx.model)
    batches = data.batches(ctx.url, 1)
    left, middle, right = st.columns(3)
    left.metric("Production model", production["label"] if production else "none yet")
    if production:
        left.caption(f"serving since {when(production['updated_at'])} ({ago(production['updated_at'])})")
    last = batches.iloc[0] if len(batches) else None
    middle.metric("Last ingest", f"batch-{last['id']} {last['status']}" if last is not None else "none yet")
    if last is not None:
        middle.caption(f"{int(last['records_accepted'])} of {int(last['records_read'])} documents accepted, "
                       f"{ago(last['started_at'])}")
    alerts = _alerts(ctx)
    right.metric("Open alerts", len(alerts))
    st.subheader("Open alerts")
    if not alerts:
        st.success("Nothing needs attention.")
    for level, text in alerts[:30]:  # alerts are findings, not page errors: st.error is kept for failures
        st.warning(text, icon=":material/report:" if level == "error" else ":material/warning:")
    st.subheader("Pipeline runs over time")
    timeline = _timeline(ctx)
    if timeline.empty:
        empty_state("pipeline runs", "Run `lmforge ingest` and `lmforge train` to record some.")
    else:
        st.altair_chart(charts.pipeline_timeline(timeline), width="stretch")


run_page("Overview", render)
