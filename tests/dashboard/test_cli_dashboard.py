"""`lmforge dashboard-password` prints a verifiable argon2id hash, never the password; the dashboard command
line is headless and sends no error details to browsers."""

from __future__ import annotations

from typer.testing import CliRunner

from flows.cli.app import app
from flows.cli.common import CliError
from flows.cli.dashboard import streamlit_command
from lmforge_core.passwords import verify_password


def test_dashboard_password_prints_an_argon2id_hash() -> None:
    secret = "a long reviewer password"
    result = CliRunner().invoke(app, ["dashboard-password"], input=f"{secret}\n{secret}\n")
    assert result.exit_code == 0, result.output
    hashed = result.output.strip().splitlines()[-1]
    assert hashed.startswith("$argon2id$") and verify_password(hashed, secret)
    assert secret not in result.output.replace("New reviewer password", "")


def test_short_password_is_refused() -> None:
    result = CliRunner().invoke(app, ["dashboard-password"], input="short\nshort\n")
    assert isinstance(result.exception, CliError) and "at least 12 characters" in result.exception.message
    assert "$argon2" not in result.output


def test_streamlit_command_hides_error_details_and_runs_headless() -> None:
    command = streamlit_command(8600, "127.0.0.1")
    pairs = dict(zip(command[5::2], command[6::2], strict=True))
    assert command[3] == "run" and command[4].endswith("dashboard/app.py")
    assert pairs["--client.showErrorDetails"] == "none" and pairs["--server.headless"] == "true"
    assert pairs["--server.port"] == "8600"
