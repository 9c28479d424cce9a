"""What every CLI command shares: the Runtime built once, JSON-or-rich output, one-line errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

from rich.console import Console

from lmforge_core.runtime import Runtime, open_runtime
from lmforge_core.settings import Settings, load_settings

console = Console()
err_console = Console(stderr=True, soft_wrap=True)

_state: dict[str, Any] = {"settings": None, "runtime": None, "debug": False, "config": None}


class CliError(Exception):
    """An error for a person: one line with the cause, and a hint of what to do."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def configure(*, debug: bool, config_file: str | None) -> None:
    _state.update(debug=debug, config=config_file, settings=None, runtime=None)


def debug_enabled() -> bool:
    return bool(_state["debug"])


def settings() -> Settings:
    """The settings, read once per process."""
    if _state["settings"] is None:
        _state["settings"] = load_settings(config_file=_state["config"])
    return _state["settings"]


def runtime(*, migrate: bool = True) -> Runtime:
    """The Runtime (stores opened, migrations applied), built once per process."""
    if _state["runtime"] is None:
        _state["runtime"] = open_runtime(settings(), migrate=migrate)
    elif migrate:
        _state["runtime"].metadata.ensure_schema()
    return _state["runtime"]


def _json_default(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime | date) else str(value)


def emit(data: dict[str, Any], as_json: bool, render: Callable[[Console, dict[str, Any]], None]) -> None:
    """Print ``data`` as JSON for scripts, or let ``render`` draw it for people."""
    if as_json:
        console.print_json(json.dumps(data, default=_json_default))
    else:
        render(console, data)
