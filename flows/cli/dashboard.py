"""``lmforge dashboard`` (starts the Streamlit review dashboard) and ``lmforge dashboard-password``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from flows.cli.common import CliError, console, runtime, settings
from lmforge_core.processes import dying_with_parent

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"


def streamlit_command(port: int, address: str) -> list[str]:
    """The `streamlit run` command line: headless, no error details (tracebacks) sent to browsers, no
    usage statistics, no file watcher."""
    return [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port),
            "--server.address", address, "--server.headless", "true", "--client.showErrorDetails", "none",
            "--client.toolbarMode", "viewer", "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none", "--server.runOnSave", "false"]


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def run_forwarding_signals(argv: list[str], env: dict[str, str], grace_s: float = 20) -> tuple[int, int | None]:
    """Run ``argv`` (Streamlit) until it exits; a SIGTERM, SIGINT or SIGHUP this process gets is passed on to
    it, so stopping `lmforge dashboard` (systemd, Kubernetes, Ctrl-C) stops the server too, and it is killed
    if it has not stopped ``grace_s`` later. It runs in a session of its own (a Ctrl-C reaches it once, from
    here) and dies with this process even when this one is killed with SIGKILL. Returns (its exit status,
    the signal that stopped it or None)."""
    stopped_by: list[tuple[int, float]] = []
    child = subprocess.Popen(dying_with_parent(argv, signal.SIGTERM), env=env, start_new_session=True)

    def forward(signum: int, _frame: object) -> None:
        stopped_by.append((signum, time.monotonic()))
        if child.poll() is None:
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in STOP_SIGNALS}
    try:
        while True:
            try:
                code = child.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if stopped_by and time.monotonic() - stopped_by[0][1] > grace_s:
                    child.kill()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if child.poll() is None:
            child.kill()
            child.wait()
    return code, stopped_by[0][0] if stopped_by else None


def _environment() -> dict[str, str]:
    """The dashboard process reads the same settings: same lmforge.toml, and this checkout first on the path."""
    env = dict(os.environ)
    root = str(APP.parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    config_file = settings().config_file
    if config_file is not None:
        env["LMFORGE_CONFIG"] = str(Path(config_file).absolute())
    return env


def register(app: typer.Typer) -> None:
    @app.command()
    def dashboard(
        port: Annotated[int | None, typer.Option("--port", min=1, max=65535, help="port (default: dashboard.port)")] = None,
        address: Annotated[str | None, typer.Option("--address", help="interface (default: dashboard.address)")] = None,
    ) -> None:
        """Start the review dashboard (Streamlit) on the metadata store of these settings."""
        cfg = settings().dashboard
        runtime()  # the database exists and is migrated before the first page asks for it
        chosen_port, chosen_address = port or cfg.port, address or cfg.address
        console.print(f"lmforge dashboard on http://{chosen_address}:{chosen_port} (Ctrl-C stops it)")
        code, stopped_by = run_forwarding_signals(streamlit_command(chosen_port, chosen_address), _environment())
        if stopped_by is None and code != 0:
            raise CliError(f"the dashboard stopped with exit status {code}", "see the messages above")

    @app.command("dashboard-password")
    def dashboard_password() -> None:
        """Print a salted argon2id hash of a new reviewer password for [dashboard].reviewers (never the password)."""
        from lmforge_core.passwords import hash_password

        password = typer.prompt("New reviewer password", hide_input=True, confirmation_prompt=True)
        try:
            console.print(hash_password(password), soft_wrap=True, highlight=False)
        except ValueError as exc:
            raise CliError(str(exc)) from exc
