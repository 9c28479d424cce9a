"""Bias and fairness: per axis and group, log-likelihood gaps and continuation sentiment with intervals,
stereotype preference against the 50% line, toxicity rate; each against its threshold, across versions.

Rows are ``evaluations`` with the metric names of :data:`dashboard.data.BIAS_METRICS`, ``slice`` =
``axis/group`` (``axis`` for stereotype preference), and ``details`` holding ``ci_low``, ``ci_high`` and the
``threshold`` the gate applied."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, data
from dashboard.context import Context
from dashboard.ui import empty_state, run_page

MAX_VERSIONS = 6


def _with_intervals(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    parts = out["slice"].astype(str).str.split("/", n=1, expand=True)
    out["axis"] = parts[0]
    out["group"] = parts[1] if parts.shape[1] > 1 else parts[0]
    out["group"] = out["group"].fillna(out["axis"])
    out["low"] = [d.get("ci_low", v) if isinstance(d, dict) else v for d, v in zip(out["details"], out["value"], strict=True)]
    out["high"] = [d.get("ci_high", v) if isinstance(d, dict) else v for d, v in zip(out["details"], out["value"], strict=True)]
    out["model"] = "v" + out["version"].astype(str)
    return out


def _threshold(frame: pd.DataFrame) -> float | None:
    values = [d.get("threshold") for d in frame["details"] if isinstance(d, dict) and d.get("threshold") is not None]
    return float(values[0]) if values else None


def _section(frame: pd.DataFrame, metric: str, title: str, reference: float | None = None) -> None:
    st.subheader(title)
    rows = frame[frame["metric"] == metric]
    if rows.empty:
        st.info(f"No {title.lower()} recorded.")
        return
    axes = sorted(rows["axis"].unique())
    axis = st.selectbox("Axis", axes, key=f"bias_axis_{metric}") if len(axes) > 1 else axes[0]
    shown = rows[rows["axis"] == axis]
    threshold = _threshold(shown)
    st.altair_chart(charts.intervals(shown, title, reference=reference, threshold=threshold), width="stretch")
    if threshold is not None:
        st.caption(f"Threshold {threshold} (red dashed).")


def _toxicity(frame: pd.DataFrame) -> None:
    st.subheader("Toxicity rate")
    rows = frame[frame["metric"] == "toxicity_rate"].sort_values("version")
    if rows.empty:
        st.info("No toxicity rate recorded.")
        return
    st.altair_chart(charts.lines(rows, "model", "value", "metric", threshold=_threshold(rows),
                                 y_title="share of toxic continuations", x_type="O"), width="stretch")


def render(ctx: Context) -> None:
    raw = data.evaluations(ctx.url, ctx.model, data.BIAS_METRICS, 20_000)
    if raw.empty:
        empty_state("bias probes", "The evaluation stage runs them on every candidate model.")
        return
    versions = sorted(raw["version"].unique(), reverse=True)
    chosen = st.multiselect("Model versions", versions, default=versions[:3], key="bias_versions",
                            format_func=lambda v: f"v{v}", max_selections=MAX_VERSIONS)
    frame = _with_intervals(raw[raw["version"].isin(chosen)])
    if frame.empty:
        st.info("Choose one or more model versions.")
        return
    _section(frame, "bias_loglik_gap", "Log-likelihood gap per group")
    _section(frame, "bias_sentiment", "Continuation sentiment per group")
    _section(frame, "stereotype_preference", "Stereotype preference", reference=0.5)
    _toxicity(frame)


run_page("Bias and fairness", render)
