"""Altair charts of the pages, built from the DataFrames of :mod:`dashboard.data` (pure functions)."""

from __future__ import annotations

import altair as alt
import pandas as pd

STATUS_COLORS = alt.Scale(
    domain=["succeeded", "accepted", "running", "failed", "quarantined", "interrupted", "empty"],
    range=["#2e7d32", "#66bb6a", "#1e88e5", "#c62828", "#ef6c00", "#8d6e63", "#9e9e9e"],
)


def pipeline_timeline(frame: pd.DataFrame) -> alt.Chart:
    """Runs over time: one point per run (start time, duration), coloured by status, shaped by kind."""
    return alt.Chart(frame).mark_point(filled=True, size=70).encode(
        x=alt.X("started_at:T", title="started"),
        y=alt.Y("duration_min:Q", title="duration (min)"),
        color=alt.Color("status:N", scale=STATUS_COLORS),
        shape=alt.Shape("kind:N"),
        tooltip=["kind", "name", "status", "started_at:T", alt.Tooltip("duration_min:Q", format=".1f")],
    ).properties(height=260)


def stacked_counts(frame: pd.DataFrame, x: str, title: str) -> alt.Chart:
    """Documents per batch by outcome (accepted, or the reject reason), stacked."""
    return alt.Chart(frame).mark_bar().encode(
        x=alt.X(f"{x}:O", title=title),
        y=alt.Y("count:Q", title="documents"),
        color=alt.Color("reason:N", title="outcome"),
        tooltip=[x, "reason", "count"],
    ).properties(height=280)


def lines(frame: pd.DataFrame, x: str, y: str, color: str, *, threshold: float | None = None,
          y_title: str | None = None, x_type: str = "Q") -> alt.LayerChart | alt.Chart:
    """A line per ``color`` value; a dashed rule at ``threshold`` when given."""
    chart = alt.Chart(frame).mark_line(point=True).encode(
        x=alt.X(f"{x}:{x_type}", title=x), y=alt.Y(f"{y}:Q", title=y_title or y), color=f"{color}:N",
        tooltip=[x, color, alt.Tooltip(f"{y}:Q", format=".4g")],
    )
    if threshold is None:
        return chart.properties(height=260)
    rule = alt.Chart(pd.DataFrame({"threshold": [threshold]})).mark_rule(strokeDash=[6, 4], color="#c62828").encode(
        y="threshold:Q")
    return (chart + rule).properties(height=260)


def histogram_pair(frame: pd.DataFrame, x_title: str) -> alt.Chart:
    """Two normalised histograms (``bin``, ``share``, ``batch``) side by side per bin."""
    return alt.Chart(frame).mark_bar(opacity=0.75).encode(
        x=alt.X("bin:O", title=x_title, axis=alt.Axis(labels=False, ticks=False)),
        xOffset="batch:N", y=alt.Y("share:Q", title="share of documents"), color="batch:N",
        tooltip=["batch", "bin", alt.Tooltip("share:Q", format=".3f")],
    ).properties(height=220)


def training_curves(series: pd.DataFrame, marks: pd.DataFrame, metric: str) -> alt.LayerChart:
    """One line per run for ``metric``; checkpoints, resumes, spikes and rollbacks marked on the step axis."""
    base = alt.Chart(series).mark_line().encode(
        x=alt.X("step:Q"), y=alt.Y("value:Q", title=metric, scale=alt.Scale(zero=False)), color="run:N",
        tooltip=["run", "step", alt.Tooltip("value:Q", format=".4g")],
    )
    rules = alt.Chart(marks).mark_rule(strokeDash=[3, 3]).encode(
        x="step:Q", color=alt.Color("event:N", scale=alt.Scale(
            domain=["checkpoint", "resume", "spike", "rollback"], range=["#90a4ae", "#1e88e5", "#ef6c00", "#c62828"])),
        tooltip=["run", "event", "step", "detail"],
    )
    return alt.layer(base, rules).resolve_scale(color="independent").properties(height=300)


def heatmap(frame: pd.DataFrame, value_title: str) -> alt.LayerChart:
    """Model version x dataset version: one cell per value, lower is greener (perplexity)."""
    base = alt.Chart(frame).encode(
        x=alt.X("dataset:N", title="dataset version"), y=alt.Y("model:N", title="model version", sort="descending"))
    cells = base.mark_rect().encode(
        color=alt.Color("value:Q", title=value_title, scale=alt.Scale(scheme="redyellowgreen", reverse=True)),
        tooltip=["model", "dataset", alt.Tooltip("value:Q", format=".3f")],
    )
    text = base.mark_text(fontSize=11).encode(text=alt.Text("value:Q", format=".2f"))
    return (cells + text).properties(height=int(max(160, 28 * frame["model"].nunique())))


def intervals(frame: pd.DataFrame, y_title: str, *, reference: float | None = None,
              thresholds: list[float] | tuple[float, ...] = ()) -> alt.LayerChart:
    """Per ``group`` a point with its interval (``low``..``high``), one colour per model version; a grey
    dashed line at the ``reference`` (e.g. 50%) and red dashed lines at the gate's ``thresholds``."""
    base = alt.Chart(frame).encode(x=alt.X("group:N"), xOffset="model:N", color="model:N")
    layers = [
        base.mark_rule().encode(y=alt.Y("low:Q", title=y_title), y2="high:Q"),
        base.mark_point(filled=True, size=60).encode(
            y="value:Q", tooltip=["model", "group", alt.Tooltip("value:Q", format=".3f"),
                                  alt.Tooltip("low:Q", format=".3f"), alt.Tooltip("high:Q", format=".3f")]),
    ]
    levels = [(reference, "#616161")] if reference is not None else []
    levels += [(level, "#c62828") for level in thresholds]
    for level, colour in levels:
        layers.append(alt.Chart(pd.DataFrame({"y": [level]})).mark_rule(strokeDash=[6, 4], color=colour)
                      .encode(y="y:Q"))
    return alt.layer(*layers).properties(height=260)


def served_timeline(frame: pd.DataFrame) -> alt.Chart:
    """Which version the production alias pointed at over time (a step line)."""
    return alt.Chart(frame).mark_line(interpolate="step-after", point=True).encode(
        x=alt.X("changed_at:T", title="changed"), y=alt.Y("version:O", title="production version", sort="descending"),
        tooltip=["changed_at:T", "version", "actor", "reason", "is_rollback"],
    ).properties(height=200)
