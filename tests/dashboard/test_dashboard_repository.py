"""The dashboard's bounded reads on SQLite and PostgreSQL: limits hold, long series are thinned in SQL."""

from __future__ import annotations

import itertools
from pathlib import Path

from lmforge_core.metadata import dashboard_repository as dash
from lmforge_core.metadata import repository as repo
from lmforge_core.runtime import open_runtime
from lmforge_core.settings import load_settings


def test_long_series_are_thinned_but_keep_their_last_step(backend_url: str, tmp_path: Path) -> None:
    rt = open_runtime(load_settings(workspace=tmp_path / "ws", database_url=backend_url))
    with rt.metadata.session() as s:
        run = repo.create_run(s, config={})
        repo.add_step_metrics(s, run.id, [(step, name, float(step)) for step in range(301) for name in ("loss", "lr")])
    with rt.metadata.session() as s:
        rows = dash.metric_series(s, [run.id], ["loss"], max_points=30)
        every = dash.metric_series(s, [run.id], ["loss", "lr"], max_points=5000)
    steps = [r["step"] for r in rows]
    assert {r["name"] for r in rows} == {"loss"}
    assert len(steps) <= 32 and steps[0] == 0 and steps[-1] == 300
    assert steps == sorted(steps) and all(b - a <= 11 for a, b in itertools.pairwise(steps))
    assert len(every) == 602  # under the bound nothing is dropped
    rt.metadata.dispose()


def test_list_reads_respect_their_limit(backend_url: str, tmp_path: Path) -> None:
    rt = open_runtime(load_settings(workspace=tmp_path / "ws", database_url=backend_url))
    with rt.metadata.session() as s:
        for _ in range(7):
            repo.create_run(s, config={})
            repo.register_model_version(s, name="lmforge", training_run_pk=None, parent_id=None, artifacts={})
    with rt.metadata.session() as s:
        runs = dash.recent_runs(s, 5)
        models = dash.model_versions(s, "lmforge", 3)
        assert len(runs) == 5 and runs[0]["id"] > runs[-1]["id"]
        assert [m["label"] for m in models] == ["lmforge:v7", "lmforge:v6", "lmforge:v5"]
        assert dash.alias_now(s, "lmforge", "production") is None
        assert dash.metric_series(s, [], ["loss"], 10) == []
    rt.metadata.dispose()


def test_the_dashboard_reads_only_through_the_core() -> None:
    """No page or helper of dashboard/ talks SQL itself: no database library is imported there."""
    import ast

    root = Path(__file__).resolve().parents[2] / "dashboard"
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in {"sqlalchemy", "psycopg", "sqlite3"}]
    assert offenders == []
