"""Data quality: outcomes per batch, Great Expectations results, duplicate/PII rates, drift, quarantine."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboard import auth, charts, data
from dashboard.context import Context
from dashboard.ui import empty_state, run_page, when
from tasks.quality.pii import redact_excerpt

BATCHES_SHOWN = 60
QUARANTINE_SAMPLE = 20
EXCERPT_SHOWN = 300


def _label(row: Any) -> str:
    dataset = ((row.stats or {}).get("dataset_version")) if hasattr(row, "stats") else None
    return f"batch-{row.id}" + (f" ({dataset})" if dataset else "")


def _outcomes(ctx: Context, batches: pd.DataFrame) -> None:
    st.subheader("Documents accepted and rejected, per batch")
    rejects = data.rejects(ctx.url, tuple(batches["id"].tolist()))
    accepted = pd.DataFrame({"batch_id": batches["id"], "reason": "accepted", "count": batches["records_accepted"]})
    frame = pd.concat([accepted, rejects], ignore_index=True)
    frame = frame[frame["count"] > 0]
    st.altair_chart(charts.stacked_counts(frame, "batch_id", "batch"), width="stretch")


def _validation(ctx: Context) -> None:
    st.subheader("Great Expectations results")
    runs, results = data.validations(ctx.url, 30)
    if runs.empty:
        empty_state("validations", "The quality gate of `lmforge ingest` records one per batch.")
        return
    labels = {f"batch-{r.batch_id} · {r.suite_name} · {'passed' if r.success else 'FAILED'} · {when(r.run_at)}": r
              for r in runs.itertuples()}
    chosen = labels[st.selectbox("Validation", list(labels), key="dq_validation")]
    shown = results[results["validation_id"] == chosen.id].drop(columns=["validation_id"])
    st.dataframe(shown, hide_index=True, width="stretch",
                 column_config={"success": st.column_config.CheckboxColumn("passed")})
    if chosen.report_key:
        page = data.data_docs(ctx.runtime.artifacts.uri, chosen.report_key)
        st.caption(f"Data Docs: `{chosen.report_key}` in the artifact store")
        if page is not None:
            st.download_button("Download the Data Docs page", page, file_name=f"data_docs_batch_{chosen.batch_id}.html",
                               mime="text/html", key="dq_docs")


def _rates(batches: pd.DataFrame) -> None:
    st.subheader("Duplicate and PII rates")
    rows = []
    for row in batches.itertuples():
        stats = row.stats or {}
        figures, pii = stats.get("figures") or {}, stats.get("pii") or {}
        docs = max(1, int(row.records_read))
        rows.append({"batch": row.id, "rate": "duplicates", "value": figures.get("duplicate_rate")})
        rows.append({"batch": row.id, "rate": "PII per document", "value": sum(pii.values()) / docs if pii else None})
    frame = pd.DataFrame(rows).dropna()
    if frame.empty:
        empty_state("duplicate or PII figures", "They are recorded with each ingested batch.")
        return
    st.altair_chart(charts.lines(frame, "batch", "value", "rate", x_type="O"), width="stretch")


def _hist(stats: dict[str, Any], key: str, name: str) -> pd.DataFrame:
    counts = ((stats or {}).get("profile") or {}).get(key) or []
    total = sum(counts) or 1
    return pd.DataFrame({"bin": range(len(counts)), "share": [c / total for c in counts], "batch": name})


def _drift(ctx: Context, batches: pd.DataFrame) -> None:
    st.subheader("Drift between dataset versions")
    gate = ctx.settings.data.gate
    rows = [{"batch": r.id, "divergence": name, "value": ((r.stats or {}).get("figures") or {}).get(name)}
            for r in batches.itertuples() for name in ("length_jsd", "token_jsd")]
    recorded = pd.DataFrame(rows).dropna()
    if recorded.empty:
        empty_state("drift figures", "Drift is measured from the second accepted batch on.")
        return
    st.altair_chart(charts.lines(recorded, "batch", "value", "divergence", threshold=gate.max_length_jsd,
                                 y_title="Jensen-Shannon divergence", x_type="O"), width="stretch")
    st.caption(f"Thresholds: length {gate.max_length_jsd}, tokens {gate.max_token_jsd} (dashed: length).")
    with_profile = batches[batches["stats"].map(lambda s: bool((s or {}).get("profile")))]
    if len(with_profile) < 2:
        return
    options = {_label(r): r for r in with_profile.itertuples()}
    names = list(options)
    a, b = st.columns(2)
    newer = options[a.selectbox("Batch", names, index=0, key="dq_drift_a")]
    older = options[b.selectbox("against", names, index=1, key="dq_drift_b")]
    for key, title in (("length_hist", "document length (words, log bins)"), ("token_hist", "token buckets")):
        frame = pd.concat([_hist(newer.stats, key, _label(newer)), _hist(older.stats, key, _label(older))])
        st.altair_chart(charts.histogram_pair(frame, title), width="stretch")


def _quarantine(ctx: Context, batches: pd.DataFrame) -> None:
    st.subheader("Quarantined documents")
    held = batches[batches["quarantine_key"].notna()]
    if held.empty:
        empty_state("quarantined documents", "Rejected documents of a batch are kept under quarantine/.")
        return
    options = {f"batch-{r.id} ({int(r.records_rejected)} rejected)": r for r in held.itertuples()}
    chosen = options[st.selectbox("Batch", list(options), key="dq_quarantine")]
    sample = data.quarantine_sample(ctx.runtime.artifacts.uri, chosen.quarantine_key, QUARANTINE_SAMPLE)
    if not sample:
        st.warning(f"The quarantine file `{chosen.quarantine_key}` is not in the artifact store.")
        return
    rows = [{"reason": s.get("reason"), "detail": s.get("detail"), "source": s.get("source")} for s in sample]
    signed_in = auth.current_user(ctx) is not None
    if signed_in:  # redacted again as shown: files quarantined before excerpts were redacted hold raw values
        for row, s in zip(rows, sample, strict=True):
            row["text"] = redact_excerpt(s.get("text") or "", EXCERPT_SHOWN)[0]
    st.caption(f"The first {len(rows)} documents of `{chosen.quarantine_key}`."
               + ("" if signed_in else " Sign in as a reviewer (sidebar) to read their text."))
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


def render(ctx: Context) -> None:
    batches = data.batches(ctx.url, BATCHES_SHOWN, with_stats=True)
    if batches.empty:
        empty_state("data batches", "Run `lmforge ingest` to take in a first drop of documents.")
        return
    _outcomes(ctx, batches)
    _validation(ctx)
    _rates(batches)
    _drift(ctx, batches)
    _quarantine(ctx, batches)


run_page("Data quality", render)
