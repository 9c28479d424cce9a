"""Fixtures of the orchestration suite: a night's configuration (an lmforge.toml the flows read, tiny
sizes so a night takes seconds of training), small sources of synthetic prose, and the Prefect harness."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lmforge_core.runtime import Runtime, open_runtime
from lmforge_core.settings import load_settings

WORDS = ("system file network packet buffer stream socket thread process memory kernel driver device storage "
         "archive record message header server client request response protocol address route cache index query "
         "table column value type class method function module package library interface object instance the a "
         "of to in on for with from by over under after before quickly slowly carefully often rarely always "
         "large small fast slow new old safe stable returns reads writes opens closes sends receives").split()

# Evaluation bounds no tiny model misses (promote) or none meets (reject).
LENIENT_GATE = {"max_perplexity": 1e9, "max_new_perplexity_increase": 100.0, "max_forgetting": 100.0,
                "max_loglik_gap": 1000.0, "max_sentiment_gap": 2.0, "max_stereotype_deviation": 0.5,
                "max_toxicity_rate": 1.0, "max_bias_regression": 100.0}
IMPOSSIBLE_GATE = LENIENT_GATE | {"max_perplexity": 1.0001, "review_margin": 0.0}


def prose(seed: int, words: int = 90) -> str:
    rng = random.Random(seed)
    sentences, count = [], 0
    while count < words:
        n = rng.randint(8, 14)
        sentences.append(" ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + ".")
        count += n
    return "\n\n".join(" ".join(sentences[i:i + 4]) for i in range(0, len(sentences), 4))


def write_source(folder: Path, name: str, seeds: range) -> Path:
    """A JSONL shard of prose documents (one per seed) under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("".join(json.dumps({"id": f"d{s}", "text": prose(s)}) + "\n" for s in seeds))
    return folder


def _toml_value(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, bool) else str(value).lower()


def _toml(data: dict[str, Any], prefix: str = "") -> str:
    plain = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    text = (f"[{prefix}]\n" if prefix and plain else "") + "".join(line + "\n" for line in plain)
    for key, value in data.items():
        if isinstance(value, dict):
            text += "\n" + _toml(value, f"{prefix}.{key}" if prefix else key)
    return text


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def tiny_night(workspace: Path) -> dict[str, Any]:
    return {
        "workspace": str(workspace),
        "data": {"workers": 1, "chunk_docs": 64, "window": 33, "gate": {"min_rows": 3},
                 "tokenizer": {"vocab_size": 300}},
        "train": {"steps": 4, "global_batch": 2, "micro_batch": 2, "checkpoint_every": 2, "warmup_steps": 1,
                  "rewarm_steps": 1, "metrics_flush_every": 2, "threads": 1},
        "evaluate": {"batch_windows": 4, "max_windows": 4, "prompt_tokens": 8, "reference_tokens": 8,
                     "continuation_documents": 2, "sample_new_tokens": 4, "samples_per_prompt": 1,
                     "bootstrap_samples": 100, "stored_samples": 1, "gate": LENIENT_GATE},
        "orchestration": {"retry": {"retries": 2, "backoff_s": 0.2, "jitter_factor": 0},
                          "review": {"timeout_s": 120, "poll_interval_s": 1}},
    }


def config_writer(folder: Path) -> Callable[..., Path]:
    """``write(**overrides)``: an lmforge.toml for a tiny night in a workspace of its own under ``folder``;
    keyword sections override the defaults."""
    counter = iter(range(1000))

    def write(**overrides: Any) -> Path:
        n = next(counter)
        data = _merge(tiny_night(folder / f"ws{n}"), overrides)
        path = folder / f"lmforge-{n}.toml"
        path.write_text(_toml(data))
        return path

    return write


@pytest.fixture
def night_config(tmp_path: Path) -> Callable[..., Path]:
    """Write an lmforge.toml for a tiny night in its own workspace (see :func:`config_writer`)."""
    return config_writer(tmp_path)


@pytest.fixture(scope="module")
def module_night_config(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """:func:`night_config` for module-scoped fixtures (a deployment and its worker shared by a module)."""
    return config_writer(tmp_path_factory.mktemp("configs"))


@pytest.fixture
def open_config() -> Callable[[Path], Runtime]:
    """A Runtime over the stores an lmforge.toml names (to inspect what a flow recorded)."""
    opened: list[Runtime] = []

    def open_(path: Path) -> Runtime:
        rt = open_runtime(load_settings(path))
        opened.append(rt)
        return rt

    yield open_
    for rt in opened:
        rt.metadata.dispose()


@pytest.fixture
def prose_source(tmp_path: Path) -> Callable[..., str]:
    """A folder source with one shard of ``count`` prose documents (distinct per ``start``)."""

    def make(name: str = "src", start: int = 0, count: int = 24) -> str:
        return str(write_source(tmp_path / name, f"part-{start:05d}.jsonl", range(start, start + count)))

    return make


@pytest.fixture
def shard_writer() -> Callable[[Path, str, range], Path]:
    return write_source


@pytest.fixture
def impossible_gate() -> dict[str, Any]:
    """Promotion-gate bounds no model meets (its perplexity must be at most 1.0001)."""
    return IMPOSSIBLE_GATE
