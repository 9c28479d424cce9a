"""Helpers shared by the serving tests: a tiny trained tokenizer and random-weight model, and a workspace of
registered, gate-passed model versions (the session fixtures in conftest.py build on it)."""

from __future__ import annotations

import pydoc
import re
import tempfile
import textwrap
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from lmforge_core.config.data import TokenizerConfig
from lmforge_core.metadata import repository as repo
from lmforge_core.runtime import Runtime, open_runtime
from lmforge_core.settings import load_settings
from model.configs import ModelConfig
from model.network import Transformer, build_model
from model.tokenizer import TokenizerRef, make_ref, store_tokenizer, train_bpe
from model.weights import CONFIG_FILE, WEIGHTS_FILE, save_model, sha256_file
from tasks.evaluate.gate import Figures, judge, record_gate

TOKENIZER_CONFIG = TokenizerConfig(vocab_size=320, min_frequency=2)
PROJECT_SOURCE = str(Path(__file__).resolve().parents[2])  # the checkout the python stubs import
_SAMPLE = re.compile(r'^(lmforge_generate_\w+)\{([^}]*)\} (\S+)$')


def corpus() -> list[str]:
    """Real English text already on the machine: the documentation of a few standard-library modules."""
    import collections
    import json
    import textwrap as tw

    text = "\n".join(pydoc.render_doc(mod, renderer=pydoc.plaintext) for mod in (json, tw, collections))
    return [p for p in textwrap.dedent(text).split("\n\n") if p.strip()]


def tiny_tokenizer() -> TokenizerRef:
    return make_ref(train_bpe(corpus(), TOKENIZER_CONFIG), "tok-test", TOKENIZER_CONFIG)


def tiny_model(vocab_size: int, seed: int = 0, context: int = 64) -> Transformer:
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=vocab_size, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=128,
                      context=context, init_std=0.08)
    return build_model(cfg).eval()


def greedy_reference(model: Transformer, prompt: list[int], max_tokens: int, eos_id: int | None) -> list[int]:
    """Greedy new tokens of the training network itself, recomputed from scratch each step (no KV cache);
    the end token is not included (the decoding library's convention)."""
    ids = list(prompt)
    out: list[int] = []
    with torch.no_grad():
        for _ in range(max_tokens):
            nxt = int(model(torch.tensor([ids]))[0, -1].argmax())
            if nxt == eos_id:
                break
            out.append(nxt)
            ids.append(nxt)
    return out


def generate_metrics(metrics_port: int, version: int = 1) -> dict[str, float]:
    """The generate model's own metrics (``lmforge_generate_*``) of one version, from Triton's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
        body = response.read().decode()
    found = {}
    for line in body.splitlines():
        match = _SAMPLE.match(line)
        if match and f'version="{version}"' in match.group(2):
            found[match.group(1)] = float(match.group(3))
    return found


PROMPTS = ["Return a JSON string", "Deserialize", "The textwrap module provides some convenience functions",
           "dict subclass that calls a factory function to supply missing values", "x", "named tuple",
           "Wrap a single paragraph of text", "Return"]


@dataclass
class Workspace:
    runtime: Runtime
    tokenizer: TokenizerRef
    models: dict[int, Transformer]  # model version number -> network


DATASET = "ds-000001"


def gate(rt: Runtime, number: int, perplexity: float) -> str:
    """The promotion gate's decision on model version ``number`` judged on a perplexity on the dataset (the
    default bound is 1000: below it the gate promotes, above it rejects); returns the verdict."""
    with rt.metadata.session() as session:
        version = repo.get_model_version(session, rt.settings.model_name, number)
        verdict, checks = judge(DATASET, Figures(perplexity={DATASET: perplexity}), None, None, rt.settings.evaluate.gate)
        record_gate(session, version, verdict, checks, None, None)
        return verdict.value


def register(rt: Runtime, model: Transformer, run: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        save_model(model, Path(tmp))
        prefix = f"models/{rt.settings.model_name}/{run}"
        sha = {}
        for name in (WEIGHTS_FILE, CONFIG_FILE):
            rt.artifacts.put_file(f"{prefix}/{name}", Path(tmp) / name)
            sha[name] = sha256_file(Path(tmp) / name)
    with rt.metadata.session() as session:
        version = repo.register_model_version(session, name=rt.settings.model_name, training_run_pk=None,
                                              parent_id=None, artifacts={"weights": prefix, "sha256": sha,
                                                                         "dataset_version": DATASET})
        return version.version


def make_workspace(root: Path, seeds: tuple[int, ...], **serving: object) -> Workspace:
    """A workspace with one model version per seed, each passed by the gate; ``serving``: more settings."""
    rt = open_runtime(load_settings(workspace=root / "ws", data={"tokenizer": TOKENIZER_CONFIG.model_dump()},
                                    serving={"max_tokens_limit": 48, "verify_max_tokens": 8,
                                             "smoke_prompts": PROMPTS[:3]} | serving))
    tok = tiny_tokenizer()
    store_tokenizer(rt.artifacts, tok)
    with rt.metadata.session() as session:
        record = repo.add_tokenizer_version(session, version=tok.version, artifact_key=tok.key, sha256=tok.sha256,
                                            vocab_size=tok.vocab_size)
        repo.create_dataset_version(session, version=DATASET, manifest_key=f"datasets/{DATASET}/manifest.json",
                                    manifest_sha256="0" * 64, tokenizer_id=record.id, train_tokens=0,
                                    validation_tokens=0, documents=0, batch_ids=[])
    models = {}
    for i, seed in enumerate(seeds):
        model = tiny_model(tok.vocab_size, seed=seed)
        number = register(rt, model, f"run-{i}")
        assert gate(rt, number, perplexity=50.0) == "promote"
        models[number] = model
    return Workspace(rt, tok, models)


@contextmanager
def serve_endpoint(app: object) -> Iterator[str]:
    """The ASGI ``app`` served by uvicorn on a free loopback port, in a thread; yields its ``/v1`` base URL."""
    import uvicorn

    from serving.triton_server import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(10)
