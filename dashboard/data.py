"""Cached reads of the pages: each calls the core's dashboard repository functions in one short session
and returns DataFrames or plain dicts. Keys are the database URL and the query's bounds; a review action
clears the cache so its effect shows at once."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pandas as pd
import streamlit as st

from dashboard.context import artifact_store, metadata_store
from lmforge_core.metadata import dashboard_repository as dash
from lmforge_core.metadata.models import ModelStatus

CACHE_TTL_S = 15
TRAINING_METRICS = ("loss", "lr", "grad_norm", "tokens_per_s")
QUALITY_METRICS = ("perplexity", "bleu", "rouge_l")
# the names and slices the evaluation stage stores (tasks/evaluate: perplexity, generation, fairness)
BIAS_METRICS = ("loglik_gap", "loglik_mean", "sentiment_gap", "sentiment_mean", "stereotype_share",
                "stereotype_deviation", "toxicity_rate")
GENERATION_SLICE = "continuation"  # slice of the bleu / rouge_l rows
SAMPLE_METRIC = "samples"  # slice side_by_side, details.samples = [{prompt, reference, greedy, sampled}]
cached = st.cache_data(ttl=CACHE_TTL_S, show_spinner=False, max_entries=256)


def _frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=columns) if rows else pd.DataFrame(columns=columns)


def clear() -> None:
    st.cache_data.clear()


@cached
def runs(url: str, limit: int) -> pd.DataFrame:
    with metadata_store(url).session() as s:
        rows = dash.recent_runs(s, limit)
    frame = _frame(rows, ["id", "run_id", "status", "started_at", "ended_at", "resumed_from_id", "error", "dataset"])
    frame["status"] = frame["status"].astype(str)
    ended = pd.to_datetime(frame["ended_at"], utc=True)
    frame["duration_min"] = (ended - pd.to_datetime(frame["started_at"], utc=True)).dt.total_seconds() / 60
    return frame


@cached
def batches(url: str, limit: int, with_stats: bool = False) -> pd.DataFrame:
    with metadata_store(url).session() as s:
        rows = dash.recent_batches(s, limit, with_stats=with_stats)
    columns = ["id", "source_uri", "status", "started_at", "finished_at", "records_read", "records_accepted",
               "records_rejected", "quarantine_key"] + (["stats"] if with_stats else [])
    frame = _frame(rows, columns)
    frame["status"] = frame["status"].astype(str)
    return frame


@cached
def rejects(url: str, batch_ids: tuple[int, ...]) -> pd.DataFrame:
    with metadata_store(url).session() as s:
        return _frame(dash.reject_counts(s, batch_ids), ["batch_id", "reason", "count"])


@cached
def validations(url: str, limit: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Recent validations and the expectation results of the newest ``limit`` of them."""
    with metadata_store(url).session() as s:
        runs_ = dash.recent_validations(s, limit)
        results = dash.expectation_results(s, [r["id"] for r in runs_], limit * 40)
    frame = _frame(runs_, ["id", "batch_id", "suite_name", "success", "run_at", "report_key"])
    details = _frame(results, ["validation_id", "expectation_type", "column", "success", "observed_value", "kwargs"])
    details["observed"] = details["observed_value"].map(lambda v: json.dumps((v or {}).get("value"))[:120])
    return frame, details.drop(columns=["observed_value"])


@cached
def run_summaries(url: str, run_pks: tuple[int, ...]) -> dict[int, dict[str, Any]]:
    with metadata_store(url).session() as s:
        return dash.run_summaries(s, run_pks)


@cached
def metrics(url: str, run_pks: tuple[int, ...], max_points: int) -> pd.DataFrame:
    with metadata_store(url).session() as s:
        rows = dash.metric_series(s, run_pks, TRAINING_METRICS, max_points)
    return _frame(rows, ["run_id", "step", "name", "value"])


@cached
def checkpoints(url: str, run_pks: tuple[int, ...], limit: int) -> pd.DataFrame:
    with metadata_store(url).session() as s:
        return _frame(dash.checkpoints_of(s, run_pks, limit), ["run_id", "step", "artifact_key", "created_at"])


@cached
def models(url: str, name: str, limit: int) -> pd.DataFrame:
    with metadata_store(url).session() as s:
        rows = dash.model_versions(s, name, limit)
    frame = _frame(rows, ["id", "name", "version", "status", "created_at", "parent_id", "run_id", "label"])
    frame["status"] = frame["status"].astype(str)
    return frame


@cached
def production(url: str, name: str) -> dict[str, Any] | None:
    with metadata_store(url).session() as s:
        return dash.alias_now(s, name, "production")


@cached
def alias_history(url: str, name: str, limit: int) -> pd.DataFrame:
    with metadata_store(url).session() as s:
        rows = dash.alias_events(s, name, "production", limit)
    return _frame(rows, ["changed_at", "actor", "reason", "is_rollback", "version", "previous_version"])


@cached
def evaluations(url: str, name: str, metrics_: tuple[str, ...], limit: int) -> pd.DataFrame:
    with metadata_store(url).session() as s:
        rows = dash.evaluation_rows(s, name, metrics_, limit)
    return _frame(rows, ["version", "dataset", "metric", "slice", "value", "details", "created_at"])


@cached
def gate_decisions(url: str, model_ids: tuple[int, ...]) -> dict[int, dict[str, Any]]:
    with metadata_store(url).session() as s:
        decisions = dash.latest_gate_decisions(s, model_ids)
    return {k: v | {"verdict": str(v["verdict"])} for k, v in decisions.items()}


@cached
def pending(url: str, name: str, limit: int) -> list[dict[str, Any]]:
    with metadata_store(url).session() as s:
        return dash.pending_reviews(s, name, limit)


@cached
def reviews(url: str, name: str, limit: int) -> pd.DataFrame:
    with metadata_store(url).session() as s:
        rows = dash.recent_reviews(s, name, limit)
    frame = _frame(rows, ["created_at", "reviewer", "decision", "comment", "version"])
    frame["decision"] = frame["decision"].astype(str)
    return frame


@cached
def models_in(url: str, name: str, statuses: tuple[str, ...], limit: int) -> pd.DataFrame:
    with metadata_store(url).session() as s:
        rows = dash.models_with_status(s, name, [ModelStatus(x) for x in statuses], limit)
    frame = _frame(rows, ["id", "version", "status", "created_at"])
    frame["status"] = frame["status"].astype(str)
    return frame


@cached
def failed_runs(url: str, limit: int) -> pd.DataFrame:
    with metadata_store(url).session() as s:
        return _frame(dash.failed_runs(s, limit), ["run_id", "started_at", "error"])


@cached
def audit(url: str, limit: int, action_prefix: str | None) -> pd.DataFrame:
    with metadata_store(url).session() as s:
        rows = dash.audit_log(s, limit, action_prefix)
    frame = _frame(rows, ["at", "actor", "action", "target", "source", "details"])
    frame["details"] = frame["details"].map(lambda d: json.dumps(d, default=str)[:300])
    return frame


@cached
def quarantine_sample(artifact_uri: str, key: str, limit: int) -> list[dict[str, Any]]:
    """The first ``limit`` records of a quarantine file (gzip JSONL: reason, detail, text excerpt)."""
    store = artifact_store(artifact_uri)
    if not store.exists(key):
        return []
    out: list[dict[str, Any]] = []
    with store.open_read(key) as raw, gzip.open(raw, "rt", encoding="utf-8") as lines:  # type: ignore[arg-type]
        for line in lines:
            if len(out) >= limit:
                break
            if line.strip():
                out.append(json.loads(line))
    return out


@cached
def data_docs(artifact_uri: str, key: str) -> bytes | None:
    store = artifact_store(artifact_uri)
    return store.get_bytes(key) if store.exists(key) else None
