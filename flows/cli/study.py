"""``lmforge study continual``: the continual-learning study on dated drops of drifting text."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from flows.cli.common import CliError, console, emit, runtime
from tasks.study.config import StudyConfig

JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
study_app = typer.Typer(help="Studies of the platform's own behaviour.", no_args_is_help=True)


def _render(c: Console, d: dict[str, Any]) -> None:
    c.print(Path(d["files"]["study.md"]).read_text())
    c.print(f"study {d['study_id']}: steps per day {d['config']['steps_per_day']}, seeds {d['config']['seeds']}")
    for name, path in d["files"].items():
        c.print(f"  {name:11} {path}  (artifact {d['artifact_keys'][name]})")


@study_app.command("continual")
def continual(
    source: Annotated[Path | None, typer.Option("--source", help="folder of day-NN-* drops (default: the built-in drifting sample)")] = None,
    days: Annotated[int, typer.Option("--days", min=2, help="days (drops) to study")] = StudyConfig.days,
    model_config: Annotated[str, typer.Option("--model-config", help="named model shape")] = StudyConfig.network,
    tokens_per_day: Annotated[int, typer.Option("--tokens-per-day", min=1, help="training tokens per day and arm")] = StudyConfig.tokens_per_day,
    batch: Annotated[int, typer.Option("--batch", min=1, help="sequences per optimizer step")] = StudyConfig.batch,
    lr: Annotated[float, typer.Option("--lr", min=1e-8, help="peak learning rate")] = StudyConfig.lr,
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="repetitions of every arm")] = len(StudyConfig.seeds),
    regularization: Annotated[str, typer.Option("--regularization", help="arm (c): l2 or ewc")] = StudyConfig.regularization,
    fixed_fraction: Annotated[list[float] | None, typer.Option("--fixed-fraction", help=f"a fixed replay fraction to sweep beside the configured one (repeatable; default: {', '.join(map(str, StudyConfig.fixed_fractions))})")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Train day by day under (a) naive, (b) replay + re-warm, (c) (b) + L2/EWC, (b) with the drift planner,
    (b) at other fixed replay fractions and (d) scratch on all data; evaluate every model on every day;
    write a table, JSON and a plot."""
    from tasks.ingest.sample import write_sample
    from tasks.study.config import StudyError
    from tasks.study.continual import run_study
    from tasks.study.outputs import write_study_outputs

    rt = runtime()
    study_id = f"continual-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    folder = rt.settings.workspace / "studies" / study_id
    if source is None:
        source = rt.settings.workspace / "studies" / "sample"
        write_sample(source, days)
    cfg = StudyConfig(days=days, network=model_config, tokens_per_day=tokens_per_day, batch=batch, lr=lr,
                      seeds=tuple(range(1, seeds + 1)), regularization=regularization,
                      fixed_fractions=tuple(fixed_fraction) if fixed_fraction else StudyConfig.fixed_fractions)

    def progress(kind: str, **fields: Any) -> None:
        if not as_json:
            console.print(f"[dim]{kind}[/] " + " ".join(f"{k}={v}" for k, v in fields.items() if k != "perplexities"))

    try:
        raw = run_study(rt.settings, folder / "workspace", source, cfg, progress)
    except StudyError as exc:
        raise CliError(str(exc), "see `lmforge study continual --help`") from exc
    emit(write_study_outputs(rt, study_id, raw, folder), as_json, _render)


def register(app: typer.Typer) -> None:
    app.add_typer(study_app, name="study")
