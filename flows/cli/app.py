"""The ``lmforge`` command line: workspace setup, status, database migrations and every stage's command."""

from __future__ import annotations

import dataclasses
import sys
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from flows.cli import dashboard as cli_dashboard
from flows.cli import data as cli_data
from flows.cli import evaluate as cli_evaluate
from flows.cli import generate as cli_generate
from flows.cli import harness as cli_harness
from flows.cli import orchestration as cli_orchestration
from flows.cli import review as cli_review
from flows.cli import serving as cli_serving
from flows.cli import study as cli_study
from flows.cli import train as cli_train
from flows.cli.common import CliError, configure, debug_enabled, emit, err_console, runtime, settings
from lmforge_core.artifacts import ArtifactError
from lmforge_core.metadata import MetadataStoreError, describe_database_error
from lmforge_core.metadata import repository as repo
from lmforge_core.metadata.repository import NotFoundError
from lmforge_core.redact import mask_text
from lmforge_core.settings import SettingsFileError

app = typer.Typer(
    name="lmforge",
    help="Keep a domain language model alive: ingest, train, evaluate, serve.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Metadata database maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


@app.callback()
def _global_options(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    config: Annotated[str | None, typer.Option("--config", help="Path of an lmforge.toml to read.")] = None,
) -> None:
    configure(debug=debug, config_file=config)


def _render_init(c: Any, d: dict[str, Any]) -> None:
    c.print(f"[green]initialised[/] workspace {d['workspace']}\n  database  {d['database']} (schema "
            f"{d['schema_revision']})\n  artifacts {d['artifacts']}")
    if d.get("base_model"):
        base = d["base_model"]
        c.print(f"  base model {base['imported']['model_version']} (tokenizer {base['imported']['tokenizer']}); "
                f"production is {base['production']}" + ("" if base["installed"] else " (kept: it existed already)"))


@app.command()
def init(
    base_model: Annotated[str | None, typer.Option(
        "--base-model", help="a Hugging Face Llama folder or .gguf file: imported as the first production model")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create the workspace and the metadata database (applies migrations); with ``--base-model`` (or
    ``[model] base``) the nights keep that pretrained model current instead of training the house network."""
    rt = runtime()
    rt.artifacts.check()
    data: dict[str, Any] = {
        "workspace": str(rt.settings.workspace),
        "database": rt.metadata.display_url,
        "schema_revision": rt.metadata.current_revision(),
        "artifacts": rt.artifacts.uri,
    }
    base = base_model or rt.settings.model.base
    if base:
        from model.weights import WeightsError
        from tasks.train.imports import install_base

        try:
            data["base_model"] = dataclasses.asdict(install_base(rt, base))
        except (WeightsError, ValueError) as exc:
            raise CliError(str(exc), "point --base-model at a Llama folder (config.json + *.safetensors) "
                           "or a .gguf file") from exc
    emit(data, as_json, _render_init)


@db_app.command("upgrade")
def db_upgrade(as_json: JsonFlag = False) -> None:
    """Apply pending migrations to the metadata database."""
    rt = runtime(migrate=False)
    before = rt.metadata.current_revision()
    after = rt.metadata.upgrade()
    data = {"database": rt.metadata.display_url, "from_revision": before, "to_revision": after}
    emit(data, as_json, lambda c, d: c.print(f"database {d['database']}: {d['from_revision']} -> {d['to_revision']}"))


def _probe(check: Any) -> dict[str, Any]:
    try:
        check()
    except (MetadataStoreError, ArtifactError) as exc:
        return {"ok": False, "error": mask_text(str(exc))}
    return {"ok": True}


def _status_data() -> dict[str, Any]:
    cfg = settings()
    data: dict[str, Any] = {"settings": cfg.masked()}
    try:
        rt = runtime(migrate=False)
    except (MetadataStoreError, ArtifactError) as exc:
        data["database"] = {"ok": False, "error": mask_text(str(exc))}
        data["artifacts"] = {"ok": False, "error": "not checked"}
        return data
    data["database"] = _probe(rt.metadata.check)
    data["artifacts"] = _probe(rt.artifacts.check)
    if not data["database"]["ok"]:
        return data
    data["database"]["schema_revision"] = rt.metadata.current_revision()
    data["database"]["schema_head"] = rt.metadata.head_revision()
    if data["database"]["schema_revision"] != data["database"]["schema_head"]:
        data["database"]["hint"] = "run `lmforge db upgrade` (or `lmforge init`)"
        return data
    with rt.metadata.session() as session:
        data["latest_runs"] = [
            {"run_id": run.run_id, "status": run.status.value, "started_at": run.started_at, "ended_at": run.ended_at}
            for run in repo.list_runs(session, limit=5)
        ]
        production = repo.get_alias(session, cfg.model_name, "production")
        data["production_model"] = production.label if production else None
        candidate = repo.get_alias(session, cfg.model_name, "candidate")
        data["candidate_model"] = candidate.label if candidate else None
        validation = repo.latest_validation(session)
        data["last_validation"] = (
            {
                "batch_id": validation.batch_id,
                "suite": validation.suite_name,
                "success": validation.success,
                "run_at": validation.run_at,
                "failed_expectations": [r.expectation_type for r in validation.results if not r.success],
            }
            if validation
            else None
        )
        latest = repo.latest_dataset_version(session)
        data["latest_dataset"] = latest.version if latest else None
    return data


def _render_status(c: Console, d: dict[str, Any]) -> None:
    table = Table(title="lmforge status", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    s = d["settings"]
    table.add_row("workspace", s["workspace"])
    for name, url in (("database", s["database_url"]), ("artifacts", s["artifact_uri"])):
        probe = d[name]
        state = "[green]reachable[/]" if probe["ok"] else f"[red]unreachable[/] {probe.get('error', '')}"
        table.add_row(name, f"{url}  {state}")
        if probe.get("hint"):
            table.add_row("", f"[yellow]{probe['hint']}[/]")
    if "production_model" in d:
        table.add_row("production model", d["production_model"] or "none yet")
        table.add_row("candidate model", d["candidate_model"] or "none")
        table.add_row("latest dataset", d["latest_dataset"] or "none yet")
        v = d["last_validation"]
        table.add_row(
            "last validation",
            "none yet" if v is None else f"batch {v['batch_id']} {'[green]passed[/]' if v['success'] else '[red]failed[/]'}"
            + (f" ({', '.join(v['failed_expectations'])})" if v["failed_expectations"] else ""),
        )
        runs = d["latest_runs"]
        table.add_row("latest runs", "none yet" if not runs else "\n".join(f"{r['run_id']} {r['status']}" for r in runs))
    c.print(table)


@app.command()
def status(as_json: JsonFlag = False) -> None:
    """Settings in effect (secrets masked), store reachability, latest runs, production model, last validation."""
    data = _status_data()
    emit(data, as_json, _render_status)
    if not (data["database"]["ok"] and data["artifacts"]["ok"]):
        raise typer.Exit(code=1)


# Each stage adds its commands from its own module.
cli_data.register(app)
cli_train.register(app)
cli_orchestration.register(app)
cli_review.register(app)
cli_serving.register(app)
cli_evaluate.register(app)
cli_generate.register(app)
cli_harness.register(app)
cli_study.register(app)
cli_dashboard.register(app)

_PERSON_ERRORS = (
    CliError,
    MetadataStoreError,
    ArtifactError,
    NotFoundError,
    ValidationError,
    FileNotFoundError,
    SettingsFileError,
)


def main() -> None:
    """Console entry point: runs the app and turns known errors into one clear line."""
    try:
        app()  # standalone: usage errors and exit codes end in SystemExit here
    except _PERSON_ERRORS as exc:
        _fail(_one_line(exc))
    except SQLAlchemyError as exc:  # the database went away or refused mid-command: its cause, not the SQL
        _fail(f"the metadata database failed: {describe_database_error(exc)}; check that it is running and "
              "reachable (LMFORGE_DATABASE_URL), then run the command again (--debug shows the statement)")
    except Exception as exc:  # the last line of defence: still one line unless --debug
        _fail(f"unexpected {type(exc).__name__}: {mask_text(str(exc))} (re-run with --debug for details)")


def _fail(message: str) -> None:
    """One line on stderr (markup in the message is shown as text), the traceback too under --debug."""
    if debug_enabled():
        err_console.print_exception()
    err_console.print(f"[red]error:[/] {escape(message)}", highlight=False)
    sys.exit(1)


def _one_line(exc: Exception) -> str:
    if isinstance(exc, CliError):
        return mask_text(exc.message + (f" — {exc.hint}" if exc.hint else ""))
    if isinstance(exc, ValidationError):
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return f"invalid settings: {problems} (check LMFORGE_* variables and lmforge.toml)"
    return mask_text(str(exc))

