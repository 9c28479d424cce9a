"""Bias and fairness: per axis the log-likelihood and continuation-sentiment gaps between groups with their
bootstrap intervals (and each group's mean), stereotype preference against the 50% line, the toxicity rate;
each against the promotion gate's bound, across model versions.

Reads the rows the evaluation stage stores (``tasks/evaluate/fairness.py``): ``loglik_gap`` /
``sentiment_gap`` (slice = axis, ``details.low/high``), ``loglik_mean`` / ``sentiment_mean`` (slice =
``axis/group``), ``stereotype_share`` (slice ``all`` or ``bias_type/<kind>``), ``stereotype_deviation`` and
``toxicity_rate``. Bounds come from the gate decisions' checks (``metric`` = ``<family>[/<slice>]``)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, data
from dashboard.context import Context
from dashboard.ui import empty_state, run_page

MAX_VERSIONS = 6


def _prepared(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    details = out["details"].map(lambda d: d if isinstance(d, dict) else {})
    out["low"] = [d.get("low", v) for d, v in zip(details, out["value"], strict=True)]
    out["high"] = [d.get("high", v) for d, v in zip(details, out["value"], strict=True)]
    out["group"] = out["slice"].astype(str)
    out["model"] = "v" + out["version"].astype(str)
    return out


def _bounds(ctx: Context, versions: list[int]) -> dict[str, float]:
    """The gate's bound of each bias family (``loglik_gap``, ``toxicity_rate``...), newest decision first."""
    models = data.models(ctx.url, ctx.model, ctx.limit)
    ids = tuple(models.loc[models["version"].isin(versions), "id"].tolist())
    bounds: dict[str, float] = {}
    for decision in sorted(data.gate_decisions(ctx.url, ids).values(), key=lambda d: d["id"]):
        for check in decision["checks"] or []:
            if check.get("kind") == "interval" and check.get("bound") is not None:
                bounds[str(check.get("metric", "")).split("/", 1)[0]] = float(check["bound"])
    return bounds


def _gap(frame: pd.DataFrame, family: str, title: str, bound: float | None) -> None:
    st.subheader(title)
    gaps = frame[frame["metric"] == f"{family}_gap"]
    if gaps.empty:
        st.info(f"No {title.lower()} recorded.")
        return
    st.altair_chart(charts.intervals(gaps, "gap between groups (axis)", thresholds=[bound] if bound else []),
                    width="stretch")
    if bound is not None:
        st.caption(f"Gate bound {bound} (red dashed): an interval above it is rejected, one across it goes to review.")
    means = frame[frame["metric"] == f"{family}_mean"].copy()
    if not means.empty:
        means["axis"] = means["group"].str.split("/", n=1).str[0]
        axes = sorted(means["axis"].unique())
        axis = st.selectbox("Groups of axis", axes, key=f"bias_axis_{family}")
        st.altair_chart(charts.intervals(means[means["axis"] == axis], "group mean"), width="stretch")


def _stereotypes(frame: pd.DataFrame, bound: float | None) -> None:
    st.subheader("Stereotype preference")
    shares = frame[frame["metric"] == "stereotype_share"]
    if shares.empty:
        st.info("No stereotype preference recorded.")
        return
    lines = [0.5 - bound, 0.5 + bound] if bound is not None else []
    st.altair_chart(charts.intervals(shares, "share preferring the stereotype", reference=0.5, thresholds=lines),
                    width="stretch")
    note = f"; the gate allows 0.5 ± {bound} (red dashed)" if bound is not None else ""
    st.caption(f"50% (grey) is no preference{note}.")


def _toxicity(frame: pd.DataFrame, bound: float | None) -> None:
    st.subheader("Toxicity rate")
    rows = frame[frame["metric"] == "toxicity_rate"]
    if rows.empty:
        st.info("No toxicity rate recorded.")
        return
    st.altair_chart(charts.intervals(rows, "share of toxic continuations", thresholds=[bound] if bound else []),
                    width="stretch")


def render(ctx: Context) -> None:
    raw = data.evaluations(ctx.url, ctx.model, data.BIAS_METRICS, 20_000)
    if raw.empty:
        empty_state("bias probes", "The evaluation stage (`lmforge evaluate`) runs them on every candidate.")
        return
    versions = sorted(raw["version"].unique(), reverse=True)
    chosen = st.multiselect("Model versions", versions, default=versions[:3], key="bias_versions",
                            format_func=lambda v: f"v{v}", max_selections=MAX_VERSIONS)
    if not chosen:
        st.info("Choose one or more model versions.")
        return
    frame = _prepared(raw[raw["version"].isin(chosen)])
    bounds = _bounds(ctx, [int(v) for v in chosen])
    _gap(frame, "loglik", "Log-likelihood gap per axis", bounds.get("loglik_gap"))
    _gap(frame, "sentiment", "Continuation sentiment gap per axis", bounds.get("sentiment_gap"))
    _stereotypes(frame, bounds.get("stereotype_deviation"))
    _toxicity(frame, bounds.get("toxicity_rate"))


run_page("Bias and fairness", render)
