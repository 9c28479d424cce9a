"""``lmforge nightly`` (the main job, once, on this machine), ``lmforge schedule`` (serve the nightly
deployment) and ``lmforge trigger`` (one run of a deployment, keyed by the data snapshot)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from flows.cli.common import CliError, emit, settings
from flows.cli.evaluate import gate_table

PROJECT_DIR = Path(__file__).resolve().parents[2]
# deployments of prefect.yaml on the local process pool; the Kubernetes ones need the Terraform pools.
PROCESS_DEPLOYMENTS = ("nightly", "ingest", "evaluate", "publish", "review-deadline")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
SourceOption = Annotated[str | None, typer.Option("--source", help="source URI (default: the next sample drop)")]


def _config_arg() -> str | None:
    path = settings().config_file
    return str(path.resolve()) if path else None


def _render_night(c: Console, night: dict[str, Any]) -> None:
    colour = {"published": "green", "failed": "red", "rejected": "red", "review_rejected": "red"}.get(
        night["status"], "yellow")
    c.print(f"[bold]night {night.get('night', 1)}[/]: [{colour}]{night['status']}[/] — {night['message']}")
    resumed = night.get("resumed_training")
    if resumed:
        c.print(f"  resumed the interrupted training {resumed['run_id']} of {resumed['dataset_version']} "
                "(nothing new ingested this night)")
    ingest = night.get("ingest") or {}
    if ingest.get("records_read"):
        rejected = ", ".join(f"{k} {v}" for k, v in sorted((ingest.get("rejected") or {}).items())) or "none"
        c.print(f"  ingested {ingest['records_accepted']} of {ingest['records_read']} records"
                f"{' (drop ' + ingest['drop'] + ')' if ingest.get('drop') else ''}; rejected: {rejected}")
    if night.get("model_version"):
        c.print(f"  dataset {night.get('dataset_version')} -> model {night['model_version']} "
                f"(run {night['training']['run_id']})")
    evaluation = night.get("evaluation")
    if evaluation:
        c.print(gate_table(evaluation.get("checks", []), f"gate: {evaluation['verdict']}"))
    if night.get("review"):
        r = night["review"]
        c.print(f"  review: {r['decision']} by {r['reviewer']} {r.get('comment') or ''}")
    if night.get("promotion", {}).get("moved"):
        m = night["promotion"]
        c.print(f"  production: {m['previous'] or 'none'} -> {m['model']}")
    if night.get("publish"):
        p = night["publish"]
        c.print(f"  published to {p['repository']} as Triton version {p['triton_version']}; "
                + (f"query grpc://{p['served_by']} (model generate)" if p["served_by"] else "no serving Triton runs"))
    for stage, why in (night.get("missing_stages") or {}).items():
        c.print(f"  [yellow]{stage}[/]: {why}")


def _render_nights(c: Console, d: dict[str, Any]) -> None:
    for night in d["nights"]:
        _render_night(c, night)


def run_nights(source: str | None, days: int, train_steps: int | None) -> list[dict[str, Any]]:
    """Run ``nightly_retrain`` ``days`` times in this process, on the workspace's temporary Prefect server
    (flows/temporary_server.py) unless PREFECT_API_URL names a server; a failed night ends the series with
    its error."""
    from prefect.settings import PREFECT_API_URL, PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    from flows.temporary_server import temporary_server

    workspace = settings().workspace
    workspace.mkdir(parents=True, exist_ok=True)
    storage = settings().orchestration.result_storage or str(workspace / "prefect-results")
    with contextlib.ExitStack() as stack:
        updates: dict[Any, Any] = {PREFECT_LOCAL_STORAGE_PATH: storage}
        if not PREFECT_API_URL.value():
            # the temporary server keeps its database in the workspace, not in the shared ~/.prefect.
            updates[PREFECT_API_URL] = stack.enter_context(
                temporary_server(workspace, f"sqlite+aiosqlite:///{workspace / 'prefect.db'}"))
        stack.enter_context(temporary_settings(updates=updates))
        return _nights(source, days, train_steps)


def _nights(source: str | None, days: int, train_steps: int | None) -> list[dict[str, Any]]:
    from flows.nightly import nightly_retrain

    nights: list[dict[str, Any]] = []
    for night in range(1, days + 1):
        state = nightly_retrain(source=source, train_steps=train_steps, config=_config_arg(), return_state=True)
        if not state.is_completed():
            try:
                state.result()
            except Exception as exc:  # the flow's own failure, named
                nights.append({"night": night, "status": "failed", "message": f"{type(exc).__name__}: {exc}"})
            break
        nights.append({"night": night} | state.result())
    return nights


def ensure_process_pool(name: str) -> None:
    """Create the process work pool ``name`` on the Prefect server unless it exists."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
        except ObjectNotFound:
            try:
                client.create_work_pool(WorkPoolCreate(
                    name=name, type="process", base_job_template=ProcessWorker.get_default_base_job_template()))
            except ObjectAlreadyExists:
                pass


def pause_served(deployment: str) -> None:
    """Pause the schedule of the deployment this process served, once it stops serving: nobody runs its
    nights until `lmforge schedule` starts again. Done here, not by Prefect's ``pause_on_shutdown``: on
    SIGTERM Prefect 3.8 pauses while its event loop is being cancelled, and the pause is sometimes cut off."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            client.pause_deployment(client.read_deployment_by_name(deployment).id)
    except Exception as exc:  # the server is gone or the deployment was removed: the stop itself succeeded
        Console(stderr=True).print(f"[yellow]could not pause the schedule of {deployment}[/]: {exc}")
        return
    Console(stderr=True).print(f"stopped serving {deployment}; its schedule is paused until `lmforge schedule` runs")


def register(app: typer.Typer) -> None:
    @app.command()
    def nightly(
        source: SourceOption = None,
        days: Annotated[int, typer.Option("--days", min=1, max=30, help="nights to run one after another")] = 1,
        train_steps: Annotated[int | None, typer.Option("--steps", min=1, help="optimizer steps per night")] = None,
        as_json: JsonFlag = False,
    ) -> None:
        """Run the nightly retraining flow now, once per --days, on this machine; print each night's summary."""
        nights = run_nights(source, days, train_steps)
        emit({"nights": nights}, as_json, _render_nights)
        if any(n["status"] == "failed" for n in nights):
            raise typer.Exit(code=1)

    @app.command()
    def schedule(
        name: Annotated[str | None, typer.Option("--name", help="deployment name (default from settings)")] = None,
    ) -> None:
        """Serve the nightly deployment from this process: cron and timezone from the settings. Ctrl-C or
        SIGTERM stops it and pauses the schedule (starting it again resumes the schedule)."""
        from prefect.schedules import Cron

        from flows.nightly import nightly_retrain

        cfg = settings().orchestration
        deployment = name or cfg.deployment_name
        try:
            nightly_retrain.serve(name=deployment, parameters={"config": _config_arg()}, pause_on_shutdown=False,
                                  schedules=[Cron(cfg.nightly_cron, timezone=cfg.timezone)])
        finally:
            pause_served(f"{nightly_retrain.name}/{deployment}")

    @app.command()
    def deploy(
        names: Annotated[list[str] | None, typer.Option("--name", help="deployment(s) of prefect.yaml")] = None,
        as_json: JsonFlag = False,
    ) -> None:
        """Register prefect.yaml's deployments on the Prefect server (PREFECT_API_URL), with the settings'
        cron and timezone; creates the local process work pool when missing. Default: the process-pool ones."""
        cfg = settings().orchestration
        chosen = names or list(PROCESS_DEPLOYMENTS)
        ensure_process_pool(cfg.work_pool)
        env = os.environ | {"LMFORGE_ORCHESTRATION__TIMEZONE": cfg.timezone,
                            "LMFORGE_ORCHESTRATION__NIGHTLY_CRON": cfg.nightly_cron,
                            "LMFORGE_PROJECT_DIR": str(PROJECT_DIR)}
        env.setdefault("LMFORGE_IMAGE", "lmforge:latest")
        env.setdefault("LMFORGE_GPUS_PER_NODE", "1")
        command = [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--prefect-file",
                   str(PROJECT_DIR / "prefect.yaml")]
        for name in chosen:
            command += ["--name", name]
        done = subprocess.run(command, cwd=PROJECT_DIR, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-4:])
            raise CliError(f"prefect deploy failed: {tail}", "check PREFECT_API_URL and the work pools")
        emit({"deployments": chosen, "timezone": cfg.timezone, "cron": cfg.nightly_cron}, as_json,
             lambda c, d: c.print(f"deployed {', '.join(d['deployments'])} (nightly {d['cron']} {d['timezone']})"))

    @app.command()
    def trigger(
        source: SourceOption = None,
        deployment: Annotated[str, typer.Option("--deployment", help="FLOW/DEPLOYMENT")] = "nightly-retrain/nightly",
        as_json: JsonFlag = False,
    ) -> None:
        """Start one run of a deployment on the Prefect server, keyed by the source's snapshot: a second
        trigger of the same snapshot returns the run already started instead of starting another."""
        from prefect.deployments import run_deployment

        from flows.cli.common import runtime
        from tasks.ingest.snapshot import snapshot_key

        key = snapshot_key(runtime(), source)
        params: dict[str, Any] = {"source": source} if source else {}
        try:
            run = run_deployment(deployment, parameters=params, idempotency_key=f"{deployment}:{key}", timeout=0)
        except Exception as exc:
            raise CliError(f"could not trigger {deployment}: {exc}", "check PREFECT_API_URL and `prefect deploy`") from exc
        emit({"flow_run_id": str(run.id), "name": run.name, "snapshot": key, "state": run.state_name}, as_json,
             lambda c, d: c.print(f"flow run {d['name']} ({d['flow_run_id']}) for snapshot {d['snapshot']}: {d['state']}"))
