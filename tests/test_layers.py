"""The layer rules of ARCHITECTURE.md, checked on the source: top may import lower, never the other way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = {"lmforge_core", "model", "serving", "tasks", "flows", "dashboard"}
ALLOWED = {
    "lmforge_core": set(),
    "model": {"lmforge_core"},
    "serving": {"lmforge_core", "model"},
    "tasks": {"lmforge_core", "model", "serving"},
    "flows": {"lmforge_core", "model", "serving", "tasks", "flows"},
    "dashboard": {"lmforge_core", "model", "serving", "tasks", "dashboard"},
}
NO_PREFECT = {"lmforge_core", "model", "serving"}


def imported_top_level(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module" and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                names.add(arg.value.split(".")[0])
    return names


def violations(package: str, files: list[Path]) -> list[str]:
    found = []
    for path in files:
        imports = imported_top_level(path)
        for name in sorted((imports & PROJECT) - ALLOWED[package] - {package}):
            found.append(f"{path.relative_to(ROOT)} imports {name}")
        if package in NO_PREFECT and "prefect" in imports:
            found.append(f"{path.relative_to(ROOT)} imports prefect")
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_respects_its_layer(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no Python files"
    assert violations(package, files) == []


def test_the_checker_catches_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import prefect\nfrom tasks.ingest import x\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        assert violations("model", [bad]) == ["bad.py imports tasks", "bad.py imports prefect"]
    finally:
        ROOT = saved


def test_every_package_says_what_it_may_import() -> None:
    for package in ALLOWED:
        docstring = ast.get_docstring(ast.parse((ROOT / package / "__init__.py").read_text()))
        assert docstring and "import" in docstring.lower(), f"{package}/__init__.py lacks its layer docstring"


RAW_SQL_ALLOWED = {"lmforge_core"}
RAW_SQL = {"text", "table", "literal_column"}  # SQL strings, and tables named outside the ORM (pg_locks)


def raw_sql_calls(path: Path) -> list[str]:
    """Raw SQL in a file: SQLAlchemy's `text(...)`, `table(...)`, `literal_column(...)` (imported from
    sqlalchemy or as `sqlalchemy.<name>`) and `exec_driver_sql(...)`; SQL belongs in lmforge_core
    (repository functions, locks, migrations)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    text_names = {alias.asname or alias.name for node in ast.walk(tree)
                  if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "sqlalchemy"
                  for alias in node.names if alias.name in RAW_SQL}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if (isinstance(func, ast.Name) and func.id in text_names) or (
                isinstance(func, ast.Attribute) and func.attr == "exec_driver_sql") or (
                isinstance(func, ast.Attribute) and func.attr in RAW_SQL and isinstance(func.value, ast.Name)
                and func.value.id in {"sqlalchemy", "sa"}):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} runs raw SQL")
    return found


@pytest.mark.parametrize("package", sorted(set(ALLOWED) - RAW_SQL_ALLOWED))
def test_no_raw_sql_outside_the_core(package: str) -> None:
    assert [hit for path in sorted((ROOT / package).rglob("*.py")) for hit in raw_sql_calls(path)] == []


def test_the_raw_sql_checker_catches_each_spelling(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import sqlalchemy as sa\nfrom sqlalchemy import text as t\n"
                   "t('SELECT 1')\nsa.text('SELECT 2')\nconn.exec_driver_sql('SELECT 3')\nsa.table('pg_locks')\n"
                   "clean_text('not sql')\nstring.text('not sql either')\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        assert raw_sql_calls(bad) == [f"bad.py:{line} runs raw SQL" for line in (3, 4, 5, 6)]
    finally:
        ROOT = saved
