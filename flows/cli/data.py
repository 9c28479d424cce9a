"""Data commands: ``lmforge sample-data``, ``lmforge ingest``, ``lmforge datasets``."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from flows.cli.common import CliError, console, emit, runtime

JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
_SHOWN_REMOVALS = 10  # removals explained in the table output (--json lists more)


def _render_sample(c: Console, d: dict[str, Any]) -> None:
    c.print(f"wrote {len(d['drops'])} drop(s) under {d['directory']}")
    for drop in d["drops"]:
        c.print(f"  {drop['drop']:<28} {drop['documents']:>5} documents  {drop['bytes'] / 1e6:6.2f} MB")


def sample_data(
    directory: Annotated[Path, typer.Argument(help="Folder to write the dated drops into.")],
    days: Annotated[int, typer.Option("--days", help="Number of daily drops (one topic each).")] = 4,
    start: Annotated[str, typer.Option("--start", help="Date of the first drop (YYYY-MM-DD).")] = "2026-01-01",
    docs_per_drop: Annotated[int, typer.Option("--docs-per-drop", help="Maximum documents per drop.")] = 250,
    as_json: JsonFlag = False,
) -> None:
    """Write the built-in sample source (pydoc + /usr/share/doc text) as dated JSONL drops."""
    from tasks.ingest.sample import TOPICS, write_sample

    try:
        first = date.fromisoformat(start)
    except ValueError as exc:
        raise CliError(f"--start {start!r} is not a date", "use YYYY-MM-DD, e.g. 2026-01-01") from exc
    if not 1 <= days <= len(TOPICS):
        raise CliError(f"--days {days} is out of range", f"the sample source has {len(TOPICS)} topics: 1..{len(TOPICS)}")
    if docs_per_drop < 1:
        raise CliError("--docs-per-drop must be at least 1")
    if directory.exists() and not directory.is_dir():
        raise CliError(f"{directory} exists and is not a folder", "choose another DIR")
    drops = write_sample(directory, days, start=first, docs_per_drop=docs_per_drop)
    emit({"directory": str(directory.resolve()), "drops": drops}, as_json, _render_sample)


def _render_ingest(c: Console, d: dict[str, Any]) -> None:
    colour = {"accepted": "green", "quarantined": "red", "nothing_new": "yellow", "empty": "red"}[d["status"]]
    c.print(f"[{colour}]{d['status']}[/]: {d['message']}")
    if d["status"] == "nothing_new":
        return
    c.print(f"source {d['source_uri']}" + (f"  drop {d['drop']}" if d["drop"] else "")
            + (f"  retry of batch {d['retry_of']}" if d["retry_of"] else ""))
    table = Table(title=f"batch {d['batch_id']}: shards")
    for col in ("shard", "status", "read", "accepted", "rejected", "note"):
        table.add_column(col, justify="right" if col in ("read", "accepted", "rejected") else "left")
    for s in d["shards"]:
        note = s["error_reason"] or s["skipped_because"] or ""
        table.add_row(s["name"], s["status"], str(s["read"]), str(s["accepted"]), str(sum(s["rejected"].values())),
                      note)
    c.print(table)
    c.print(f"read {d['records_read']}, accepted {d['records_accepted']}, "
            f"rejected {sum(d['rejected'].values())}")
    for reason, count in d["rejected"].items():
        c.print(f"  {reason:<36} {count:>7}")
    f = d["figures"]
    if f:
        def fmt(v: Any) -> str:
            return "n/a" if v is None else f"{v:.3f}"

        drift = (
            "no previous batch to compare with"
            if f["previous_batch_id"] is None
            else f"vs previous batch {f['previous_batch_id']}: volume x{fmt(f['volume_ratio'])}, "
            f"length JSD {fmt(f['length_jsd'])}, token JSD {fmt(f['token_jsd'])}"
        )
        c.print(f"reject rate {fmt(f['reject_rate'])}, duplicate rate {fmt(f['duplicate_rate'])} "
                f"(exact {f['exact_duplicates']}, near {f['near_duplicates']}), {drift}")
    gate = d["gate"]
    if gate is not None:
        c.print("quality gate: " + ("[green]passed[/]" if gate["success"] else "[red]failed[/]"))
        for failure in gate["failures"]:
            where = f"({failure['column']})" if failure["column"] else ""
            c.print(f"  [red]x[/] {failure['suite']}: {failure['expectation_type']}{where} "
                    f"observed {failure['observed_value']!r}")
    if d["dataset_version"]:
        tokens = d["dataset"]["num_tokens"]
        c.print(f"dataset version [bold]{d['dataset_version']}[/]: {tokens['train']} train + "
                f"{tokens['validation']} validation tokens, tokenizer {d['tokenizer_version']}"
                + (" (newly trained)" if d["tokenizer_trained"] else ""))
    shown = d["removals"][:_SHOWN_REMOVALS]
    if shown:
        c.print(f"why removed (the first {len(shown)}; {d['removals_recorded']} kept in the metadata store, every "
                "rejected record in the quarantine file):")
        for r in shown:
            c.print(f"  {r['shard']} #{r['position']} {r['doc_id'] or ''}: {r['explanation']}", markup=False)
    for key in d["quarantine_keys"]:
        c.print(f"quarantine: {key}")
    if d["data_docs_key"]:
        c.print(f"data docs: {d['data_docs_key']}")
    if d["remaining_drops"]:
        c.print(f"later drops, not examined in this run: {', '.join(d['remaining_drops'])} "
                "(run `lmforge ingest` again, or `--all-drops`)")


def ingest(
    source_uri: Annotated[str | None, typer.Argument(
        help="Folder or s3://bucket/prefix of shards; default: the built-in sample source.")] = None,
    all_drops: Annotated[bool, typer.Option(
        "--all-drops", help="Sample source: take every new drop into one batch instead of the next one.")] = False,
    new_tokenizer: Annotated[bool, typer.Option(
        "--new-tokenizer", help="Train a new tokenizer on this batch instead of reusing the current one.")] = False,
    retry: Annotated[int | None, typer.Option(
        "--retry", metavar="BATCH_ID", min=1,
        help="Re-run the shards of a quarantined or failed batch as a new batch under the current settings.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Ingest new shards: clean, filter, redact, dedup, quality gate, new dataset version.

    With no SOURCE_URI the built-in sample source (generated into <workspace>/sample-source on first
    use) is ingested one dated drop per run. With --retry BATCH_ID the shards of that quarantined or
    failed batch run again (e.g. after a threshold was fixed). Exits with 1 when the quality gate fails.
    """
    from tasks.dedup import DedupStateError
    from tasks.ingest.ingest_lock import IngestLockedError, IngestLockLostError
    from tasks.ingest.pipeline import run_ingest
    from tasks.ingest.retry import RetryError, retry_batch
    from tasks.ingest.sources import SourceError

    if retry is not None and (source_uri is not None or all_drops):
        raise CliError("--retry takes the shards of the earlier batch; it cannot be combined with SOURCE_URI "
                       "or --all-drops")

    rt = runtime()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True, disable=as_json) as bar:
        task = bar.add_task("shards", total=None)

        def on_shard(name: str, i: int, total: int) -> None:
            bar.update(task, description=f"shard {name}", completed=i, total=total)

        try:
            if retry is not None:
                result = retry_batch(rt, retry, new_tokenizer=new_tokenizer, progress=on_shard)
            else:
                result = run_ingest(rt, source_uri, all_drops=all_drops, new_tokenizer=new_tokenizer,
                                    progress=on_shard)
        except (RetryError, IngestLockedError, IngestLockLostError) as exc:
            raise CliError(str(exc)) from exc
        except SourceError as exc:
            raise CliError(str(exc), "give a folder of .jsonl/.parquet/.txt/.md shards or s3://bucket/prefix") from exc
        except DedupStateError as exc:
            raise CliError(str(exc)) from exc
    emit(result.to_dict(), as_json, _render_ingest)
    if result.gate_failed or result.status == "empty":
        raise typer.Exit(code=1)


def _render_datasets(c: Console, d: dict[str, Any]) -> None:
    if not d["datasets"]:
        c.print("no dataset versions yet: run `lmforge ingest`")
        return
    table = Table(title="dataset versions")
    for col in ("version", "created", "documents", "train tokens", "validation tokens", "tokenizer", "batches"):
        table.add_column(col)
    for ds in d["datasets"]:
        table.add_row(ds["version"], ds["created_at"][:19], str(ds["documents"]), str(ds["train_tokens"]),
                      str(ds["validation_tokens"]), ds["tokenizer"] or "", ", ".join(map(str, ds["batches"])))
    c.print(table)


def datasets(as_json: JsonFlag = False) -> None:
    """List dataset versions with their token counts and lineage (batches, tokenizer)."""
    from tasks.dataset.versions import dataset_versions

    rows = dataset_versions(runtime())
    emit({"datasets": rows}, as_json, _render_datasets)


def register(app: typer.Typer) -> None:
    app.command("sample-data")(sample_data)
    app.command("ingest")(ingest)
    app.command("datasets")(datasets)
