"""``lmforge train``, ``lmforge export-hf`` and ``lmforge import-hf``."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from flows.cli.common import CliError, console, emit, runtime
from lmforge_core.metadata import repository as repo

JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def _progress_bar(progress: Progress, total: int, quiet: bool) -> Any:
    task = progress.add_task("training", total=total, info="")

    def on_event(event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "start":
            progress.update(task, completed=event["step"])
        elif kind == "step":
            progress.update(task, completed=event["step"], info=(
                f"loss {event['loss']:.3f}  lr {event['lr']:.2e}  {event['tokens_per_s']:.0f} tok/s  "
                f"MFU {event['mfu']:.1%}"))
        elif quiet:  # --json: stdout carries only the result
            return
        elif kind in ("spike", "rollback"):
            progress.console.print(f"[yellow]{kind}[/] at step {event.get('step', event.get('to_step'))}")
        elif kind == "checkpoint":
            progress.console.print(f"checkpoint {event['tag']}")

    return on_event


def _render(c: Console, d: dict[str, Any]) -> None:
    c.print(f"[green]run {d['run_id']} {d['status']}[/]: model {d['model_version']} is the candidate")
    c.print(f"  final loss {d['summary'].get('final_loss')}, spikes {d['summary'].get('spikes')}, "
            f"rollbacks {d['summary'].get('rollbacks')}")
    c.print(f"  checkpoint {d['checkpoint_key']}  (artifact store)\n  run folder {d['run_dir']}\n"
            f"  metrics: `lmforge status` / step_metrics of run {d['run_id']} in the metadata store")


def train(
    model_config: Annotated[str | None, typer.Option("--model-config", help="named shape: tiny, 20m, 125m, 1b, 7b, 30b")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="dataset version (default: latest)")] = None,
    steps: Annotated[int | None, typer.Option("--steps", min=1, help="optimizer steps")] = None,
    source: Annotated[str, typer.Option("--from", help="production, scratch, or a Hugging Face folder")] = "production",
    processes: Annotated[int | None, typer.Option("--processes", min=1, help="training processes")] = None,
    resume: Annotated[str | None, typer.Option("--resume", help="resume this run id from its last checkpoint")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Train (continual: new data + replay) and record a run and a new candidate model version."""
    from model.token_shards import DataError
    from model.weights import WeightsError
    from tasks.train.run import TrainingError, resume_training, run_training

    rt = runtime()
    total = steps or rt.settings.train.steps
    try:
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console,
                      disable=as_json, transient=False) as progress:
            on_event = _progress_bar(progress, total, quiet=as_json)
            if resume:
                result = resume_training(rt, resume, processes=processes, progress=on_event)
            else:
                result = run_training(rt, dataset=dataset, steps=steps, network=model_config, source=source,
                                      processes=processes, progress=on_event)
    except (TrainingError, WeightsError, DataError, ValueError) as exc:
        raise CliError(str(exc), "see the run folder's log and `lmforge status`") from exc
    emit(dataclasses.asdict(result), as_json, _render)

def _export_target(directory: Path, force: bool) -> None:
    """Refuse a file, or a folder that already holds something unless ``force``: an export writes its files
    (config.json, model.safetensors, the tokenizer's) over any of the same names, and would leave the others
    beside them as if they belonged to it."""
    if directory.exists() and not directory.is_dir():
        raise CliError(f"{directory} exists and is not a folder", "give a new or empty folder")
    held = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    if held and not force:
        shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
        raise CliError(f"{directory} is not empty ({shown}): exporting into it would overwrite or mix files",
                       "give a new or empty folder, or --force to write into this one")


def export_hf_command(
    model_version: Annotated[str, typer.Argument(help="version number (3, v3) or alias (production)")],
    directory: Annotated[Path, typer.Argument(help="output folder (config.json + model.safetensors)")],
    force: Annotated[bool, typer.Option(
        "--force", help="Write into DIRECTORY even if it holds files (files of the same names are replaced).")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Write a model version as a Hugging Face Llama checkpoint, tokenizer included, into a new or empty folder."""
    from model.hf_interop import export_hf
    from model.registry import fetch_weights, split_ref, tokenizer_for_version
    from model.weights import WeightsError

    _export_target(directory, force)
    rt = runtime()
    name, ref = split_ref(rt.settings.model_name, model_version)
    with rt.metadata.session() as session:
        version = repo.resolve_model_version(session, name, ref)
        record, label = dict(version.artifacts), version.label
        tokenizer = tokenizer_for_version(session, rt.artifacts, record, rt.settings.data.tokenizer)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            export_hf(fetch_weights(rt.artifacts, record, Path(tmp), label), directory, tokenizer)
    except (WeightsError, ValueError) as exc:
        raise CliError(str(exc), "train a model first, or restore its artifacts") from exc
    data = {"model_version": label, "directory": str(directory.resolve()),
            "tokenizer": tokenizer.version if tokenizer else None}
    emit(data, as_json, lambda c, d: c.print(
        f"[green]exported[/] {d['model_version']} to {d['directory']} (Llama format"
        + (f", tokenizer {d['tokenizer']})" if d["tokenizer"] else ", no tokenizer recorded)")))

def _render_import(c: Console, d: dict[str, Any]) -> None:
    shape = d["model"]
    what = "already registered as" if d["found"] else "registered as"
    c.print(f"[green]imported[/] {d['source']}: {what} {d['model_version']} ({shape['n_layers']} layers, dim "
            f"{shape['dim']}, vocabulary {shape['vocab_size']}; "
            + (f"its own tokenizer {d['tokenizer']})" if d["tokenizer"] else "no tokenizer)"))
    c.print(f"  generate: `lmforge generate-local {d['model_version']} PROMPT`; to keep it current every night: "
            f"`lmforge init --base-model {d['source']}`")


def import_hf_command(
    source: Annotated[Path, typer.Argument(help="Hugging Face Llama folder (config.json + safetensors) or .gguf file")],
    as_json: JsonFlag = False,
) -> None:
    """Import a pretrained Llama checkpoint as a new model version, with its own tokenizer and chat template."""
    from model.weights import WeightsError
    from tasks.train.imports import import_model

    rt = runtime()
    try:
        imported = import_model(rt, source)
    except (WeightsError, ValueError) as exc:
        raise CliError(str(exc), "point at a Llama folder (config.json + *.safetensors) or a .gguf file") from exc
    emit(dataclasses.asdict(imported) | {"source": str(source)}, as_json, _render_import)


def register(app: typer.Typer) -> None:
    """Add the training commands. They import torch and the training stack only when run, so that
    `lmforge status` and the other commands start without paying for it."""
    app.command()(train)
    app.command("export-hf")(export_hf_command)
    app.command("import-hf")(import_hf_command)
