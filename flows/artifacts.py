"""The Prefect artifacts each run publishes: data-quality summary (with its Data Docs link), evaluation
report, gate decision. Rendering only: the figures come from the stages' results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.artifacts import create_markdown_artifact

from lmforge_core.artifacts import ArtifactStore


def artifact_url(store: ArtifactStore, key: str) -> str:
    """Where a person opens an artifact-store object: an s3:// URI, or a file:// URL for a local folder."""
    if store.uri.startswith("s3://"):
        return f"{store.uri.rstrip('/')}/{key}"
    return Path(store.uri, key).resolve().as_uri()


def _md_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def data_quality_artifact(store: ArtifactStore, ingest: dict[str, Any]) -> str:
    """Markdown summary of one ingest: counts, rejects by reason, gate suites and failures, Data Docs link."""
    parts = [f"# Data quality: {ingest.get('status')}", "", ingest.get("message", ""), "",
             _md_table(["read", "accepted", "dataset version", "tokenizer"],
                       [[ingest.get("records_read", 0), ingest.get("records_accepted", 0),
                         ingest.get("dataset_version") or "-", ingest.get("tokenizer_version") or "-"]])]
    if ingest.get("rejected"):
        parts += ["", "## Rejected records", _md_table(["reason", "count"], sorted(ingest["rejected"].items()))]
    gate = ingest.get("gate")
    if gate:
        parts += ["", "## Gate suites", _md_table(["suite", "passed", "evaluated", "failed"], [
            [s["suite"], s["success"], s["evaluated"], s["failed"]] for s in gate["suites"]])]
        if gate["failures"]:
            parts += ["", "## Failed expectations", _md_table(["expectation", "column", "observed"], [
                [f["expectation_type"], f.get("column") or "", f.get("observed_value")] for f in gate["failures"]])]
    if ingest.get("data_docs_key"):
        parts += ["", f"[Great Expectations Data Docs]({artifact_url(store, ingest['data_docs_key'])})"]
    return str(create_markdown_artifact(markdown="\n".join(parts), key="data-quality",
                                        description="Ingest and quality-gate summary of this run"))


def evaluation_artifact(store: ArtifactStore, evaluation: dict[str, Any]) -> str:
    """The evaluation stage's own markdown report (perplexity by dataset and forgetting, bias, generation)."""
    markdown = store.get_bytes(evaluation["report_key"].removesuffix(".json") + ".md").decode()
    markdown += f"\n\n[report.json]({artifact_url(store, evaluation['report_key'])})\n"
    return str(create_markdown_artifact(markdown=markdown, key="evaluation-report",
                                        description=f"Evaluation of {evaluation['model_version']}"))


def gate_artifact(evaluation: dict[str, Any]) -> str:
    """The promotion gate's decision and each check behind it."""
    rows = [[c.get("name"), c.get("value"), c.get("bound"), c.get("verdict"), c.get("detail", "")]
            for c in evaluation["checks"]]
    markdown = "\n".join([f"# Gate decision for {evaluation['model_version']}: **{evaluation['verdict']}**", "",
                          evaluation["explanation"], "",
                          _md_table(["check", "value", "bound", "verdict", "detail"], rows)])
    return str(create_markdown_artifact(markdown=markdown, key="gate-decision",
                                        description=f"Promotion gate of {evaluation['model_version']}"))
