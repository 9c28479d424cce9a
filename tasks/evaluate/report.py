"""The evaluation report of one model version, Markdown and JSON, gate table first.

Stored under ``evaluations/<model>/v<N>/<evaluation id>/`` in the artifact store (the id is a fingerprint of
the evaluation's inputs): ``report.json``,
``report.md``, ``events.jsonl``, and ``manifest.json`` (written last) with the sha256 of each. The
artifact store writes every file atomically, so a reader sees a whole report or none.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmforge_core.artifacts import ArtifactStore

MANIFEST = "manifest.json"


def report_prefix(name: str, version: int, evaluation_id: str) -> str:
    return f"evaluations/{name}/v{version}/{evaluation_id}"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_fmt(v).replace("|", "\\|").replace("\n", " ") for v in row) + " |"
                    for row in rows]


def gate_table(checks: list[dict[str, Any]]) -> list[list[Any]]:
    """Rows ``[check, value, bound, verdict, detail]`` in gate order (the CLI prints the same rows)."""
    return [[c["name"], c["value"], c["bound"], c["verdict"], c.get("detail", "")] for c in checks]


def markdown(report: dict[str, Any]) -> str:
    baseline = report["baseline"] or "none (a first model: absolute bounds only)"
    head = [f"# Evaluation of {report['model_version']}: **{report['verdict'].upper()}**", "",
            f"Newest data {report['newest_dataset']}; baseline (production) {baseline}; "
            f"parent {report['parent'] or 'none'}; evaluated {report['created_at']}.", "", "## Promotion gate", ""]
    lines = head + _table(["check", "value", "bound", "verdict", "detail"], gate_table(report["checks"]))
    lines += ["", "## Perplexity by dataset version", ""]
    lines += _table(["dataset", "sources", "perplexity", "parent", "production", "forgetting"],
                    [[d, ", ".join(r["sources"]), r["perplexity"], r.get("parent"), r.get("production"),
                      r.get("forgetting")] for d, r in report["perplexity"].items()])
    lines += ["", "## Bias and fairness (value and bootstrap interval)", ""]
    lines += _table(["metric", "value", "low", "high", "detail"],
                    [[k, b["value"], b["low"], b["high"], b.get("detail", "")] for k, b in report["bias"].items()])
    gen = report["generation"]
    lines += ["", "## Generation quality", ""]
    lines += _table(["BLEU", "ROUGE-L", "distinct-1", "distinct-2", "repetition", "documents"],
                    [[gen["bleu"], gen["rouge_l"], gen["distinct_1"], gen["distinct_2"], gen["repetition"],
                      gen["items"]]])
    lines += ["", "## Samples", ""]
    for i, s in enumerate(report["samples"], start=1):
        lines += [f"**{i}.** prompt: {s['prompt']!r}", f"- reference: {s['reference']!r}",
                  f"- greedy: {s['greedy']!r}", f"- sampled: {s['sampled']!r}", ""]
    lines += ["## Probe sets", ""] + [f"- {k}: version {v}" for k, v in report["probe_sets"].items()]
    return "\n".join(lines) + "\n"


def store_report(artifacts: ArtifactStore, prefix: str, report: dict[str, Any], events: Path | None) -> str:
    """Write the report files and their manifest; returns the key of ``report.json``."""
    files = {"report.json": json.dumps(report, indent=2, sort_keys=True, default=str).encode(),
             "report.md": markdown(report).encode()}
    if events is not None and events.is_file():
        files["events.jsonl"] = events.read_bytes()
    digests = {name: artifacts.put_bytes(f"{prefix}/{name}", data).sha256 for name, data in files.items()}
    artifacts.put_bytes(f"{prefix}/{MANIFEST}", json.dumps({"files": digests}, indent=2, sort_keys=True).encode())
    return f"{prefix}/report.json"


def _rows_by(rows: list[Any], metric: str, slice_name: str = "all") -> dict[str, Any]:
    return {r.dataset: r for r in rows if r.metric == metric and r.slice == slice_name}


def _perplexity_section(rows: list[Any], parent: dict[str, float], production: dict[str, float]
                        ) -> dict[str, dict[str, Any]]:
    forgetting = _rows_by(rows, "forgetting")
    return {d: {"perplexity": r.value, "sources": list((r.details or {}).get("sources", [])),
                "tokens": (r.details or {}).get("tokens"), "parent": parent.get(d), "production": production.get(d),
                "forgetting": forgetting[d].value if d in forgetting else None}
            for d, r in _rows_by(rows, "perplexity").items()}


def _generation_section(rows: list[Any]) -> dict[str, Any]:
    by_metric = {r.metric: r for r in rows if r.slice in ("continuation", "sampled")}
    out = {key: by_metric[metric].value if metric in by_metric else None for key, metric in (
        ("bleu", "bleu"), ("rouge_l", "rouge_l"), ("distinct_1", "distinct_1"), ("distinct_2", "distinct_2"),
        ("repetition", "repetition_rate"))}
    out["items"] = (by_metric["bleu"].details or {}).get("items") if "bleu" in by_metric else 0
    return out


def build_report(*, label: str, verdict: str, checks: list[dict[str, Any]], newest: str, baseline: str | None,
                 parent: str | None, rows: list[Any], bias: dict[str, Any], parent_ppl: dict[str, float],
                 production_ppl: dict[str, float], probe_sets: dict[str, str], thresholds: dict[str, Any],
                 created_at: str) -> dict[str, Any]:
    """The report as plain data: ``rows`` are this version's evaluation rows, ``bias`` its intervals."""
    samples = next((r.details.get("samples", []) for r in rows if r.metric == "samples"), [])
    details = {(r.metric, r.slice): r.details or {} for r in rows}
    bias_out = {}
    for name, iv in sorted(bias.items()):
        metric, _, axis = name.partition("/")
        extra = details.get((metric, axis or "all"), {})
        detail = f"{extra['high_group']} over {extra['low_group']}" if "high_group" in extra else ""
        bias_out[name] = {"value": iv.value, "low": iv.low, "high": iv.high, "detail": detail}
    return {"model_version": label, "verdict": verdict, "checks": checks, "newest_dataset": newest,
            "baseline": baseline, "parent": parent, "created_at": created_at,
            "perplexity": _perplexity_section(rows, parent_ppl, production_ppl), "bias": bias_out,
            "generation": _generation_section(rows), "samples": samples, "probe_sets": probe_sets,
            "thresholds": thresholds}
