"""``lmforge triton up|down|status``, ``lmforge serve publish|rollback|status|reconcile|openai``, ``lmforge generate``,
``lmforge loadtest``: the serving side of the CLI. Heavy imports happen inside the commands."""

from __future__ import annotations

import dataclasses
import getpass
import sys
from typing import Annotated, Any

import typer
from rich.console import Console

from flows.cli.common import CliError, emit, runtime

JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
UrlOption = Annotated[str | None, typer.Option("--url", help="Triton gRPC host:port (default: the local server)")]


def _grpc_url(url: str | None) -> str:
    from tasks.publish.publish import serving_grpc_url

    found = url or serving_grpc_url(runtime())
    if not found:
        raise CliError("no Triton server to talk to", "start one with `lmforge triton up` or pass --url host:port")
    return found


def _register_triton(app: typer.Typer) -> None:
    triton = typer.Typer(help="The local Triton Inference Server (bundled with nvidia-pytriton).", no_args_is_help=True)
    app.add_typer(triton, name="triton")

    @triton.command("up")
    def up(http_port: Annotated[int, typer.Option(help="0 = a free port")] = 0,
           grpc_port: Annotated[int, typer.Option(help="0 = a free port")] = 0,
           metrics_port: Annotated[int, typer.Option(help="0 = a free port")] = 0, as_json: JsonFlag = False) -> None:
        """Start Triton on the model repository (explicit model control, all models loaded), health-checked."""
        from serving.triton_config import MODELS
        from serving.triton_repository import RepositoryError
        from serving.triton_server import TritonServerError, free_port, is_ready, read_state, start_server
        from tasks.publish.publish import PublishError, model_repository, server_dir

        rt = runtime()
        state = read_state(server_dir(rt))
        try:
            repo = model_repository(rt)
            if state is not None and is_ready(state):
                # already served: say so and succeed (a second `up` is not an error); another repository is.
                if state.repository != _location(repo.triton_path):
                    raise CliError(f"a Triton server already runs on {state.repository} (pid {state.pid}, gRPC "
                                   f"{state.grpc_url}), not on {repo.uri}", "`lmforge triton down` first")
                emit(dataclasses.asdict(state) | {"already_running": True}, as_json, _render_up)
                return
            published = repo.published_versions()
        except (PublishError, RepositoryError) as exc:
            raise CliError(str(exc), "check serving.repository and the S3 credentials") from exc
        if not published:
            raise CliError(f"the model repository {repo.uri} has no published version", "run `lmforge serve publish candidate`")
        ports = tuple(p or free_port() for p in (http_port, grpc_port, metrics_port))
        try:
            state = start_server(repo.triton_path, server_dir(rt), load=list(MODELS), ports=ports)  # type: ignore[arg-type]
        except TritonServerError as exc:
            raise CliError(str(exc), "see the log named above") from exc
        emit(dataclasses.asdict(state) | {"already_running": False}, as_json, _render_up)

    @triton.command("down")
    def down(as_json: JsonFlag = False) -> None:
        """Stop the local Triton server."""
        from serving.triton_server import stop_server
        from tasks.publish.publish import server_dir

        state = stop_server(server_dir(runtime()))
        emit({"stopped": state.pid if state else None}, as_json, lambda c, d: c.print(
            f"stopped Triton (pid {d['stopped']})" if d["stopped"] else "no local Triton server was recorded"))

    @triton.command("status")
    def status(as_json: JsonFlag = False) -> None:
        """Whether the local server runs and is ready, its ports, models and metrics."""
        from serving.triton_server import server_status
        from tasks.publish.publish import server_dir

        data = server_status(server_dir(runtime()))
        emit(data, as_json, _render_status)
        if not data.get("ready"):
            raise typer.Exit(code=1)


def _location(repository: Any) -> str:
    """Where a Triton server reads ``repository``, as its recorded state names it (an absolute folder or s3://)."""
    from pathlib import Path

    return str(repository) if str(repository).startswith("s3://") else str(Path(repository).absolute())


def _render_up(c: Console, d: dict[str, Any]) -> None:
    c.print(f"[green]Triton {'already runs' if d['already_running'] else 'ready'}[/] pid {d['pid']}: "
            f"HTTP 127.0.0.1:{d['http_port']}, gRPC 127.0.0.1:{d['grpc_port']}, "
            f"metrics http://127.0.0.1:{d['metrics_port']}/metrics\n  repository {d['repository']}\n  log {d['log_file']}")


def _render_status(c: Console, d: dict[str, Any]) -> None:
    if not d.get("running"):
        c.print(f"[red]not running[/] {d.get('reason', '')}")
        return
    c.print(f"pid {d['pid']} {'[green]ready[/]' if d['ready'] else '[red]not ready[/]'}  HTTP :{d['http_port']}  "
            f"gRPC :{d['grpc_port']}  metrics :{d['metrics_port']}  log {d['log_file']}")
    for m in d.get("models", []):
        c.print(f"  {m.get('name')} v{m.get('version', '?')} {m.get('state', '')} {m.get('reason', '')}")


def _render_published(c: Console, d: dict[str, Any]) -> None:
    if d["reused"]:
        done = (f"the server at {d['served_by']} now serves it" if d["switched"] else "nothing to do")
        c.print(f"{d['model_version']} is already published as Triton version {d['triton_version']} in "
                f"{d['repository']} with the same graph: {done}")
        return
    c.print(f"[green]published[/] {d['model_version']} as Triton version {d['triton_version']} in {d['repository']}\n"
            f"  ONNX parity max |diff| {d['parity_max_abs']:.2g}; verified {d['verification']['prompts']} prompts, "
            f"p50 {d['verification']['latency_ms']['p50']:.0f} ms\n"
            f"  server: {d['served_by'] or 'none running (start with `lmforge triton up`)'}")


def _render_serving(c: Console, d: dict[str, Any]) -> None:
    recorded = f"version {d['recorded']}" if d["recorded"] is not None else "nothing"
    triton = (", ".join(f"{m} {v}" for m, v in d["triton"].items()) if d["triton"] is not None
              else "no server answered")
    c.print(f"store records {recorded} as served; Triton ({d['server'] or 'none'}) serves: {triton}")
    for difference in d["differences"]:
        c.print(f"  [red]differs[/] {difference}")
    if d["agree"]:
        c.print("  [green]in agreement[/]")


def _register_serve(app: typer.Typer) -> None:
    serve = typer.Typer(help="Publish model versions to Triton, roll back, the OpenAI-compatible API.", no_args_is_help=True)
    app.add_typer(serve, name="serve")

    @serve.command("publish")
    def publish(model_version: Annotated[str, typer.Argument(help="version (3, v3) or alias (candidate)")],
                as_json: JsonFlag = False) -> None:
        """Export to ONNX (parity-checked), verify in a throw-away Triton, publish, switch the local server."""
        from tasks.publish.publish import PublishError, publish_model

        try:
            result = publish_model(runtime(), model_version, actor=getpass.getuser())
        except (PublishError, ValueError, RuntimeError) as exc:
            raise CliError(str(exc), "nothing was published") from exc
        emit(dataclasses.asdict(result), as_json, _render_published)

    @serve.command("rollback")
    def rollback(reason: Annotated[str, typer.Option(help="why (kept in the alias history)")] = "",
                 as_json: JsonFlag = False) -> None:
        """Serve the previously served version again (recorded in the alias history)."""
        from tasks.publish.publish import PublishError, rollback_serving

        try:
            result = rollback_serving(runtime(), actor=getpass.getuser(), reason=reason)
        except (PublishError, RuntimeError) as exc:
            raise CliError(str(exc), "the served version is unchanged") from exc
        emit(result, as_json, lambda c, d: c.print(
            f"[green]rolled back[/] to {d['model_version']} (Triton version {d['triton_version']}, "
            f"was {d['from_version']})"))

    @serve.command("status")
    def serve_status(as_json: JsonFlag = False) -> None:
        """What the store records as served against what Triton serves; exit 1 when they differ."""
        from tasks.publish.reconcile import serving_status

        status = serving_status(runtime())
        emit(status.to_dict(), as_json, _render_serving)
        if not status.agree:
            raise typer.Exit(code=1)

    @serve.command("reconcile")
    def serve_reconcile(as_json: JsonFlag = False) -> None:
        """Make Triton serve the version the store records as served (audited)."""
        from tasks.publish.publish import PublishError
        from tasks.publish.reconcile import reconcile

        try:
            result = reconcile(runtime(), actor=getpass.getuser())
        except PublishError as exc:
            raise CliError(str(exc), "check `lmforge serve status` and `lmforge triton status`") from exc
        emit(result, as_json, lambda c, d: (c.print("[green]reconciled[/]" if d["changed"] else "already in agreement"),
                                            _render_serving(c, d["after"])))

    @serve.command("openai")
    def openai_server(host: str = "127.0.0.1", port: int = 8000, url: UrlOption = None) -> None:
        """Run the OpenAI-compatible /v1/completions and /v1/chat/completions endpoint in front of Triton."""
        import uvicorn

        from serving.openai_api import Backend, create_app
        from tasks.publish.publish import PublishError, repository_path

        rt = runtime()
        try:
            folder = repository_path(rt)
        except PublishError as exc:
            raise CliError(str(exc), "the OpenAI endpoint needs a local model repository") from exc
        backend = Backend(_grpc_url(url), folder, rt.settings.model_name)
        uvicorn.run(create_app(backend), host=host, port=port, log_level="info")


def _register_clients(app: typer.Typer) -> None:
    @app.command("generate")
    def generate(prompt: Annotated[str, typer.Argument(help="text to continue")],
                 max_tokens: Annotated[int, typer.Option("--max-tokens", min=1)] = 32,
                 temperature: Annotated[float, typer.Option(min=0.0)] = 0.0,
                 top_k: Annotated[int, typer.Option("--top-k", min=0)] = 0,
                 top_p: Annotated[float, typer.Option("--top-p", min=0.0, max=1.0)] = 1.0,
                 seed: Annotated[int | None, typer.Option(min=0)] = None,
                 stream: Annotated[bool, typer.Option("--stream", help="print text as it is generated")] = False,
                 url: UrlOption = None, as_json: JsonFlag = False) -> None:
        """Generate text with the served model through Triton (the generate_text entry, gRPC)."""
        from serving.client import LMClient, ServingError

        params: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature, "top_k": top_k, "top_p": top_p}
        if seed is not None:
            params["seed"] = seed
        client = LMClient(_grpc_url(url))
        pieces: list[str] = []
        try:
            for piece in client.stream_text(prompt, **params):
                pieces.append(piece)
                if stream and not as_json:
                    sys.stdout.write(piece)
                    sys.stdout.flush()
        except ServingError as exc:
            raise CliError(str(exc), "check the request options and `lmforge triton status`") from exc
        finally:
            client.close()
        if stream and not as_json:
            sys.stdout.write("\n")
            return
        emit({"prompt": prompt, "text": "".join(pieces)}, as_json, lambda c, d: c.print(d["text"], markup=False,
                                                                                        highlight=False))

    @app.command("loadtest")
    def loadtest(concurrency: Annotated[int, typer.Option(min=1)] = 4,
                 requests: Annotated[int, typer.Option(min=1)] = 32,
                 max_tokens: Annotated[int, typer.Option("--max-tokens", min=1)] = 32,
                 url: UrlOption = None, as_json: JsonFlag = False) -> None:
        """Requests/s, tokens/s, TTFT, inter-token latency and p50/p95/p99 latency at a concurrency."""
        from serving.client import LMClient
        from serving.loadtest import run_load

        grpc = _grpc_url(url)
        rt = runtime()
        client = LMClient(grpc)
        try:
            prompts = [client.tokenize(p) for p in rt.settings.serving.smoke_prompts]
        finally:
            client.close()
        report = run_load(grpc, prompts, concurrency=concurrency, requests=requests, max_tokens=max_tokens)
        emit(report.to_dict(), as_json, lambda c, d: c.print(
            f"concurrency {d['concurrency']}: {d['requests_per_s']:.2f} req/s, {d['tokens_per_s']:.1f} tok/s, "
            f"TTFT p50 {d['ttft_ms_p50']:.1f} ms, ITL {d['itl_ms_mean']:.2f} ms, latency p50/p95/p99 "
            f"{d['latency_ms_p50']:.0f}/{d['latency_ms_p95']:.0f}/{d['latency_ms_p99']:.0f} ms, errors {d['errors']}"))


def register(app: typer.Typer) -> None:
    _register_triton(app)
    _register_serve(app)
    _register_clients(app)
