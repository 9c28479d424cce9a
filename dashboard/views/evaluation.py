"""Evaluation: perplexity per dataset version for each model version (forgetting at a glance), the BLEU and
ROUGE-L trend, and generation samples of a candidate beside the production model."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboard import charts, data
from dashboard.context import Context
from dashboard.ui import empty_state, run_page

MAX_MODELS = 30


def _heatmap(frame: pd.DataFrame) -> None:
    st.subheader("Perplexity: model version x dataset version")
    ppl = frame[(frame["metric"] == "perplexity") & (frame["slice"] == "all")]
    if ppl.empty:
        empty_state("perplexity evaluations", "The evaluation stage records one per model and dataset version.")
        return
    newest = sorted(ppl["version"].unique(), reverse=True)[:MAX_MODELS]
    ppl = ppl[ppl["version"].isin(newest)]
    cells = ppl.groupby(["version", "dataset"], as_index=False)["value"].last()
    cells["model"] = "v" + cells["version"].astype(str).str.zfill(3)
    st.altair_chart(charts.heatmap(cells, "perplexity"), width="stretch")
    st.caption("A row getting redder to the left is forgetting: older data got worse for a newer model.")


def _trend(frame: pd.DataFrame) -> None:
    st.subheader("BLEU and ROUGE-L by model version")
    scores = frame[frame["metric"].isin(["bleu", "rouge_l"]) & (frame["slice"] == data.GENERATION_SLICE)]
    if scores.empty:
        empty_state("BLEU/ROUGE scores", "They are recorded by the evaluation stage on the reference set.")
        return
    trend = scores.groupby(["version", "metric", "dataset"], as_index=False)["value"].last()
    for column, (metric, title) in zip(st.columns(2), (("bleu", "BLEU"), ("rouge_l", "ROUGE-L")), strict=True):
        one = trend[trend["metric"] == metric]
        with column:
            if one.empty:
                st.info(f"No {title} recorded.")
            else:
                st.altair_chart(charts.lines(one, "version", "value", "dataset", y_title=title, x_type="O"),
                                width="stretch")


def _samples(rows: pd.DataFrame, version: int | None) -> dict[str, dict[str, Any]]:
    """prompt -> stored sample (``reference``, ``greedy``, ``sampled``) of one model version."""
    found: dict[str, dict[str, Any]] = {}
    for details in rows.loc[rows["version"] == version, "details"]:
        for sample in (details or {}).get("samples") or []:
            if isinstance(sample, dict) and "prompt" in sample:
                found.setdefault(str(sample["prompt"]), sample)
    return found


def _side_by_side(ctx: Context) -> None:
    st.subheader("Generation samples: candidate beside production")
    rows = data.evaluations(ctx.url, ctx.model, (data.SAMPLE_METRIC,), 200)
    if rows.empty:
        empty_state("generation samples", "The evaluation stage stores samples for a fixed set of prompts.")
        return
    versions = sorted(rows["version"].unique(), reverse=True)
    production = data.production(ctx.url, ctx.model)
    candidate = st.selectbox("Candidate", versions, format_func=lambda v: f"v{v}", key="eval_candidate")
    prod_version = production["version"] if production else None
    served = _samples(rows, prod_version)
    prod_title = f"production v{prod_version}" if prod_version is not None else "production (none)"
    table: list[dict[str, Any]] = [
        {"prompt": prompt, "reference": sample.get("reference", ""), f"candidate v{candidate}": sample.get("greedy", ""),
         prod_title: served.get(prompt, {}).get("greedy", "")}
        for prompt, sample in _samples(rows, candidate).items()]
    st.dataframe(pd.DataFrame(table), hide_index=True, width="stretch")


def render(ctx: Context) -> None:
    frame = data.evaluations(ctx.url, ctx.model, data.QUALITY_METRICS, 20_000)
    if frame.empty and data.models(ctx.url, ctx.model, 1).empty:
        empty_state("evaluated models", "Train a model (`lmforge train`); the evaluation stage scores it.")
        return
    _heatmap(frame)
    _trend(frame)
    _side_by_side(ctx)


run_page("Evaluation", render)
