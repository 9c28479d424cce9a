"""flows: the faces people and schedulers touch — the ``lmforge`` CLI and the Prefect flows.

Layer: faces. May import everything below (tasks, model, serving, lmforge_core). Only the CLI and the
deployment file import the flows themselves.
"""
