"""Fixtures of the data-stage suites: synthetic prose that passes the quality filters, shard writers,
and runtimes with small thresholds (one in-process assessor so no worker processes start per test)."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lmforge_core.runtime import Runtime, open_runtime
from lmforge_core.settings import load_settings

WORDS = (
    "system file network packet buffer stream socket thread process memory kernel driver device "
    "storage archive record message header server client request response protocol address route "
    "cache index query table column value type class method function module package library "
    "interface object instance attribute parameter argument result error warning signal event queue "
    "lock timer clock schedule worker task job batch pipeline stage report metric sample token "
    "window vector matrix tensor model layer weight gradient update history version release branch "
    "commit merge change patch build test check verify measure compare select filter order group "
    "the a an of to in on for with from by over under after before between during while when where "
    "quickly slowly carefully often rarely always never again still already simply clearly directly "
    "large small fast slow new old safe stable early late local remote shared private public simple "
    "returns reads writes opens closes sends receives stores loads creates removes starts stops keeps"
).split()


def prose(seed: int, words: int = 120) -> str:
    """Deterministic pseudo-English: sentences of common words, distinct across seeds."""
    rng = random.Random(seed)
    sentences, count = [], 0
    while count < words:
        n = rng.randint(8, 16)
        sentence = [rng.choice(WORDS) for _ in range(n)]
        sentences.append(" ".join(sentence).capitalize() + ".")
        count += n
    paragraphs = [" ".join(sentences[i : i + 4]) for i in range(0, len(sentences), 4)]
    return "\n\n".join(paragraphs)


def write_jsonl(path: Path, docs: list[dict | str]) -> Path:
    """Write records (dicts as JSON, strings verbatim as raw lines) to a JSONL shard."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [d if isinstance(d, str) else json.dumps(d) for d in docs]
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.fixture
def make_prose() -> Callable[..., str]:
    return prose


@pytest.fixture
def jsonl_writer() -> Callable[[Path, list], Path]:
    return write_jsonl


@pytest.fixture
def data_runtime_factory(tmp_path: Path) -> Iterator[Callable[..., Runtime]]:
    """Runtimes over one temporary workspace (SQLite + local artifacts) with small-batch thresholds."""
    opened: list[Runtime] = []

    def make(database_url: str = "", workspace: str = "ws", **data: object) -> Runtime:
        overrides = {"workers": 1, "chunk_docs": 64, "gate": {"min_rows": 3}, "tokenizer": {"vocab_size": 400}}
        overrides.update(data)
        settings = load_settings(workspace=tmp_path / workspace, database_url=database_url, data=overrides)
        rt = open_runtime(settings)
        opened.append(rt)
        return rt

    yield make
    for rt in opened:
        rt.metadata.dispose()
