"""``lmforge evaluate MODEL_VERSION`` and ``lmforge evaluations``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from flows.cli.common import CliError, console, emit, runtime

JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
COLOURS = {"promote": "green", "pass": "green", "needs_review": "yellow", "reject": "red"}


def _value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def gate_table(checks: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for col in ("check", "value", "bound", "verdict", "detail"):
        table.add_column(col, justify="right" if col in ("value", "bound") else "left")
    for c in checks:
        colour = COLOURS[c["verdict"]]
        table.add_row(c["name"], _value(c["value"]), _value(c["bound"]), f"[{colour}]{c['verdict']}[/]", c["detail"])
    return table


def _render_evaluation(c: Console, d: dict[str, Any]) -> None:
    colour = COLOURS[d["verdict"]]
    c.print(gate_table(d["checks"], f"promotion gate: {d['model_version']}"))
    c.print(f"[{colour}]{d['verdict']}[/]: {d['model_version']} on {d['newest_dataset']}, baseline "
            f"{d['baseline'] or 'none (first model: absolute bounds only)'}, parent {d['parent'] or 'none'}")
    c.print(f"  report {d['report_key']} (and report.md beside it), {d['rows']} evaluation rows stored")
    if d["reused"]:
        c.print("  [yellow]found the earlier evaluation with the same inputs[/] (--force redoes it)")


def _on_event(progress: Progress, quiet: bool):  # type: ignore[no-untyped-def]
    task = progress.add_task("evaluating", total=None, info="")

    def handle(event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "perplexity_batch":
            progress.update(task, total=event["total"], completed=event["done"], info=f"perplexity {event['dataset']}")
        elif kind in ("probe", "generation", "baseline", "gate"):
            progress.update(task, info=event.get("name") or kind)
            if not quiet and kind == "baseline":
                progress.console.print(f"baseline {event['model_version']}: scoring what it lacks")

    return handle


def _render_list(c: Console, d: dict[str, Any]) -> None:
    table = Table(title="evaluations")
    for col in ("model", "status", "verdict", "not passed", "rows", "report"):
        table.add_column(col)
    for e in d["evaluations"]:
        verdict = e["verdict"] or "-"
        table.add_row(e["model_version"], e["status"], f"[{COLOURS.get(verdict, 'white')}]{verdict}[/]",
                      ", ".join(e["not_passed"]) or "-", str(e["rows"]), e["report_key"] or "-")
    c.print(table)
    matrix = d["perplexity_matrix"]
    if matrix["datasets"]:
        grid = Table(title="perplexity: model version x dataset version")
        grid.add_column("model")
        for ds in matrix["datasets"]:
            grid.add_column(ds, justify="right")
        for label in matrix["model_versions"]:
            row = matrix["values"][label]
            grid.add_row(label, *(_value(row[ds]) if ds in row else "-" for ds in matrix["datasets"]))
        c.print(grid)


def register(app: typer.Typer) -> None:
    """Add the evaluation commands (torch and the model stack are imported only when one runs)."""

    @app.command()
    def evaluate(
        model_version: Annotated[str, typer.Argument(help="version number (3, v3) or alias (candidate)")],
        pairs: Annotated[Path | None, typer.Option(
            "--pairs", help="stereotype pairs: an official CrowS-Pairs .csv or StereoSet .json instead of the "
                            "shipped set")] = None,
        force: Annotated[bool, typer.Option("--force", help="redo it even if an evaluation with the same inputs "
                                                            "is the one in force")] = False,
        as_json: JsonFlag = False,
    ) -> None:
        """Evaluate a model version, run the promotion gate and store the report; exit 1 on reject."""
        from model.token_shards import DataError
        from model.weights import WeightsError
        from tasks.evaluate.probes import ProbeFileError
        from tasks.evaluate.run import EvaluationError, ProbeSets, run_evaluation

        rt = runtime()
        try:
            probes = ProbeSets.configured(rt.settings.evaluate, pairs=pairs)
            with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                          TimeElapsedColumn(), console=console, disable=as_json) as progress:
                result = run_evaluation(rt, model_version, probes=probes, force=force,
                                        progress=_on_event(progress, as_json))
        except ProbeFileError as exc:
            raise CliError(str(exc), "fix the probe file or drop --pairs") from exc
        except (EvaluationError, WeightsError, DataError, ValueError) as exc:
            raise CliError(str(exc), "see `lmforge evaluations` and `lmforge datasets`") from exc
        emit(result.to_dict(), as_json, _render_evaluation)
        if result.verdict == "reject":
            raise typer.Exit(code=1)

    @app.command()
    def evaluations(as_json: JsonFlag = False) -> None:
        """Evaluated model versions with their gate verdicts, and the perplexity matrix."""
        from lmforge_core.metadata import evaluation_repository as evals

        rt = runtime()
        name = rt.settings.model_name
        with rt.metadata.session() as session:
            rows = [{"model_version": v.label, "status": v.status.value, "rows": n,
                     "verdict": d.verdict.value if d else None, "report_key": d.report_key if d else None,
                     "not_passed": [c["name"] for c in (d.checks if d else []) if not c["passed"]]}
                    for v, d, n in evals.evaluated_versions(session, name)]
            matrix = evals.metric_matrix(session, name)
        emit({"evaluations": rows, "perplexity_matrix": matrix}, as_json, _render_list)
