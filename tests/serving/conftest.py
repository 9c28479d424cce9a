"""Session fixtures of the serving tests: a workspace with two registered model versions (real tokenizer,
tiny random-weight networks), each passed by the real promotion gate (the evaluation stage's judge and
record functions, on given figures), v1 published through the real publish path (ONNX export, verification
in a throw-away Triton), and one real Triton server serving the repository on free loopback ports."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from serving_helpers import Workspace, make_workspace


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
