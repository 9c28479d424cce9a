"""Session fixtures of the serving tests: a workspace with two registered model versions (real tokenizer,
tiny random-weight networks), each passed by the real promotion gate (the evaluation stage's judge and
record functions, on given figures), v1 published through the real publish path (ONNX export, verification
in a throw-away Triton), and one real Triton server serving the repository on free loopback ports."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from serving_helpers import TOKENIZER_CONFIG, tiny_model, tiny_tokenizer

from lmforge_core.metadata import repository as repo
from lmforge_core.runtime import Runtime, open_runtime
from lmforge_core.settings import load_settings
from model.network import Transformer
from model.tokenizer import TokenizerRef, store_tokenizer
from model.weights import CONFIG_FILE, WEIGHTS_FILE, save_model, sha256_file
from tasks.evaluate.gate import Figures, judge, record_gate

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


@dataclass
class Served:
    workspace: Workspace
    state: object  # serving.triton_server.ServerState
    published: object  # the PublishResult of v1

    @property
    def grpc(self) -> str:
        return self.state.grpc_url

    @property
    def http(self) -> str:
        return self.state.http_url


@pytest.fixture(scope="session")
def served(tmp_path_factory):
    """lmforge:v1 published and served by a real Triton server; v2 registered, not yet published."""
    from serving.triton_config import MODELS
    from serving.triton_server import start_server, stop_server
    from tasks.publish.publish import publish_model, repository_path, server_dir

    ws = make_workspace(tmp_path_factory.mktemp("serving"), seeds=(0, 1))
    published = publish_model(ws.runtime, "1", actor="test")
    state = start_server(repository_path(ws.runtime), server_dir(ws.runtime), load=list(MODELS))
    try:
        yield Served(ws, state, published)
    finally:
        stop_server(server_dir(ws.runtime))
        ws.runtime.metadata.dispose()
