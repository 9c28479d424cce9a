"""checkov over infra/terraform finds no failed check, and every skip it honours is justified."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

CHECKOV_TIMEOUT_S = 170


def run_checkov(checkov: str, directory: Path, home: Path) -> dict:
    # --framework terraform: only the HCL scanners; --skip-download and no external modules: no
    # network (checkov would otherwise fetch guidelines and remote module sources).
    completed = subprocess.run(
        [
            checkov,
            "--directory",
            str(directory),
            "--framework",
            "terraform",
            "--output",
            "json",
            "--compact",
            "--skip-download",
            "--download-external-modules",
            "false",
        ],
        capture_output=True,
        text=True,
        timeout=CHECKOV_TIMEOUT_S,
        # A bare environment: no API keys that would make checkov call out, caches in a scratch HOME.
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LOG_LEVEL": "ERROR"},
    )
    assert completed.returncode in (0, 1), f"checkov crashed ({completed.returncode}): {completed.stderr[-2000:]}"
    report = json.loads(completed.stdout)
    # With one framework checkov prints one report object; with several, a list of them.
    return report[0] if isinstance(report, list) else report


def test_checkov_passes_every_check(checkov: str, terraform_root: Path, tmp_path: Path) -> None:
    report = run_checkov(checkov, terraform_root, tmp_path)
    summary = report["summary"]
    failures = [
        f"{f['check_id']} {f['check_name']}\n    {f['resource']} at {f['file_path']}:{f['file_line_range'][0]}"
        for f in report["results"]["failed_checks"]
    ]
    assert summary["parsing_errors"] == 0, f"checkov could not parse {summary['parsing_errors']} file(s)"
    assert summary["resource_count"] > 100, f"checkov scanned only {summary['resource_count']} resources"
    assert not failures, f"{len(failures)} failed checkov check(s):\n" + "\n".join(failures)
    for skipped in report["results"]["skipped_checks"]:
        reason = (skipped.get("check_result", {}).get("suppress_comment") or "").strip()
        assert len(reason.split()) >= 5, f"{skipped['check_id']} on {skipped['resource']} is skipped without a reason"
