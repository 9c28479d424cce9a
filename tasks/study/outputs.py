"""Where a study's results go: JSON, a Markdown table and a PNG plot, in the workspace and the artifact store
(``studies/<study id>/...``), each file written atomically and stored with its sha256."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmforge_core.fileio import atomic_write
from lmforge_core.runtime import Runtime
from tasks.study.report import markdown_table, plot, summarize, targets


def write_study_outputs(runtime: Runtime, study_id: str, raw: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Summarize ``raw``, write ``study.json``, ``study.md`` and ``study.png`` into ``folder`` and the store."""
    summary = summarize(raw)
    claims = targets(summary)
    report = raw | {"study_id": study_id, "summary": summary, "targets": claims}
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "study.json", json.dumps(report, indent=2, default=str))
    atomic_write(folder / "study.md", markdown_table(summary, claims))
    plot(summary, folder / "study.png")
    keys = {}
    for name in ("study.json", "study.md", "study.png"):
        keys[name] = runtime.artifacts.put_file(f"studies/{study_id}/{name}", folder / name).key
    return report | {"files": {name: str(folder / name) for name in keys}, "artifact_keys": keys}
