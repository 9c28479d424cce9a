"""The ``lmforge`` command line. `app.py` holds the app and the workspace commands; each stage adds its own
commands from a module of its own here (``register(app)``)."""

from flows.cli.app import app, main

__all__ = ["app", "main"]
