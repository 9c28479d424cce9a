"""Serving under faults and hostile requests, on a real Triton server, the real OpenAI endpoint (driven by the
`openai` package and raw HTTP) and the real publish path: requests that must be refused (in OpenAI's error
shape, before a stream starts), version switches under steady endpoint traffic, a store and a server that
disagree, and a server killed mid-publish. The tests run in file order: each leaves the stack as the next
expects (v1 served, v2 published from the fourth test on, the server killed in the last)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import httpx
import pytest
from serving_helpers import PROMPTS, make_workspace, serve_endpoint
from typer.testing import CliRunner

from flows.cli import app
from serving.client import LMClient, ServingError
from serving.openai_api import Backend, create_app
from serving.served_version import served_by_model
from serving.triton_config import GENERATE, MODELS, validate_config
from serving.triton_server import group_members, is_ready, start_server, stop_server
from serving.verify import switch_version
from tasks.publish.publish import (
    PublishError,
    model_repository,
    publish_model,
    recorded_number,
    repository_path,
    rollback_serving,
    server_dir,
)

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """v1 published and served by a real Triton, v2 registered; the OpenAI endpoint in front of the server."""
    ws = make_workspace(tmp_path_factory.mktemp("reliability"), seeds=(0, 1))
    rt = ws.runtime
    publish_model(rt, "1", actor="test")
    state = start_server(repository_path(rt), server_dir(rt), load=list(MODELS))
    try:
        with serve_endpoint(create_app(Backend(state.grpc_url, repository_path(rt), "lmforge"))) as url:
            yield ws, state, url
    finally:
        stop_server(server_dir(rt))
        rt.metadata.dispose()


def _post(url: str, body: dict, stream: bool = False) -> httpx.Response:
    """A completion request as raw JSON (ASCII escapes, so a lone surrogate travels as ``\\ud800``)."""
    content = json.dumps({"prompt": PROMPTS[0], "max_tokens": 4} | body | {"stream": stream})
    return httpx.post(f"{url}/completions", content=content, headers={"content-type": "application/json"},
                      timeout=120)


def _error(response: httpx.Response) -> dict:
    """The OpenAI error object of a JSON answer (failing when the answer is anything else)."""
    assert response.headers["content-type"].startswith("application/json"), response.text[:300]
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


HOSTILE = [  # (request fields, status, words of the message)
    ({"temperature": 1e-300}, 400, "temperature"),
    ({"max_tokens": 2**63}, 400, "max_tokens"),
    ({"seed": 2**64}, 400, "seed"),
    ({"prompt": "a lone \ud800 surrogate"}, 400, "lone surrogate"),
    ({"stop": ""}, 400, "stop sequence is empty"),
    ({"stop": ["ok", ""]}, 400, "stop sequence is empty"),
    ({"model": "gpt-4"}, 404, "'gpt-4' does not exist"),
    ({"max_tokens": 999}, 400, "exceeds this server's limit 48"),
    ({"prompt": "Return a JSON string " * 40}, 400, "the model's context is 64"),
]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("body", "status", "words"), HOSTILE)
def test_a_bad_request_gets_an_openai_error_before_any_stream(stack, body, status, words, stream):
    _, _, url = stack
    response = _post(url, body, stream)
    assert response.status_code == status and words in _error(response)["message"]


def test_the_openai_client_sees_the_refusals_as_its_own_errors(stack):
    _, _, url = stack
    client = openai.OpenAI(base_url=url, api_key="not-needed", max_retries=0)
    with pytest.raises(openai.NotFoundError, match="does not exist") as missing:
        client.completions.create(model="gpt-4", prompt="x", max_tokens=2)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(model="lmforge", messages=[{"role": "user", "content": "hi"}], max_tokens=2,
                                       temperature=1e-300, stream=True)


def test_a_body_over_the_cap_is_refused_with_413_and_the_endpoint_keeps_serving(stack):
    _, _, url = stack
    huge = _post(url, {"prompt": "x" * (2 << 20)})  # 2 MiB, over the 1 MiB cap
    assert huge.status_code == 413 and "larger than this server's limit" in _error(huge)["message"]
    assert _post(url, {"temperature": 0}).status_code == 200


def test_unsafe_sampling_parameters_sent_to_triton_directly_are_refused_and_hurt_no_other_stream(stack):
    ws, state, _ = stack
    ids = ws.tokenizer.encode(PROMPTS[2])
    client, other = LMClient(state.grpc_url, timeout=120), LMClient(state.grpc_url, timeout=120)
    try:
        alone = client.generate(ids, max_tokens=40, temperature=0.0).tokens
        running = other.stream(ids, max_tokens=40, temperature=0.0)
        first = next(running)  # a stream in the batch while the bad requests arrive
        for params, words in (({"temperature": 1e-300}, "'temperature' must be between"),
                              ({"repetition_penalty": 1e-300}, "'repetition_penalty' must be between")):
            with pytest.raises(ServingError, match=words):
                client.generate(ids, max_tokens=4, **params)
        assert [first, *running] == alone
    finally:
        client.close()
        other.close()


def _traffic(url: str, stop: threading.Event, done: list[tuple[float, str]], mode: str) -> None:
    """Requests through the endpoint until ``stop``: (finish time, "ok" or the failure) for each."""
    client = openai.OpenAI(base_url=url, api_key="not-needed", max_retries=0, timeout=120)
    while not stop.is_set():
        try:
            if mode == "plain":
                client.completions.create(model="lmforge", prompt=PROMPTS[1], max_tokens=8, temperature=0)
            elif mode == "stream":
                chunks = client.completions.create(model="lmforge", prompt=PROMPTS[1], max_tokens=8, temperature=0,
                                                   stream=True)
                assert [c for c in chunks][-1].choices[0].finish_reason in ("stop", "length")
            else:
                chunks = client.chat.completions.create(model="lmforge", max_tokens=8, temperature=0, stream=True,
                                                        messages=[{"role": "user", "content": PROMPTS[0]}])
                assert [c for c in chunks][-1].choices[0].finish_reason in ("stop", "length")
            done.append((time.monotonic(), "ok"))
        except Exception as exc:  # every failure is counted, none may happen
            done.append((time.monotonic(), f"{mode}: {exc!r}"))
        time.sleep(0.05)


def test_version_switches_under_endpoint_traffic_lose_no_request(stack):
    """Four switches (publish v2, roll back, publish v2 again, roll back) while plain, streamed and chat requests
    flow through the endpoint: no request fails, requests finish during every switch, and the server is alive
    and ready afterwards (no crash under switches)."""
    ws, state, url = stack
    rt = ws.runtime
    done: list[tuple[float, str]] = []
    stop = threading.Event()
    workers = [threading.Thread(target=_traffic, args=(url, stop, done, m)) for m in ("plain", "stream", "chat")]
    for w in workers:
        w.start()
    windows, served = [], []
    try:
        for switch in (lambda: publish_model(rt, "2", actor="test"), lambda: rollback_serving(rt, actor="test"),
                       lambda: publish_model(rt, "2", actor="test"), lambda: rollback_serving(rt, actor="test")):
            started = time.monotonic()
            switch()
            windows.append((started, time.monotonic()))
            served.append(httpx.get(f"{url}/models", timeout=60).json()["data"][0]["version"])
    finally:
        stop.set()
        for w in workers:
            w.join(120)
    failures = [outcome for _, outcome in done if outcome != "ok"]
    assert not failures, f"{len(failures)} of {len(done)} requests failed: {failures[:3]}"
    assert all(any(start <= t <= end for t, _ in done) for start, end in windows)  # traffic during each switch
    assert served == [2, 1, 2, 1] and recorded_number(rt) == 1
    assert os.waitpid(state.pid, os.WNOHANG) == (0, 0)  # alive: no crash (it once aborted here, see generate.py)
    deadline = time.monotonic() + 60  # strict readiness waits for the old versions' unload, which runs on
    while not is_ready(state) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert is_ready(state)


def _cli(rt, monkeypatch, *args):
    monkeypatch.setenv("LMFORGE_WORKSPACE", str(rt.settings.workspace))
    result = CliRunner().invoke(app, [*args, "--json"])
    return result.exit_code, json.loads(result.output)


def test_a_server_that_differs_from_the_store_is_shown_and_reconciled(stack, monkeypatch):
    ws, state, _ = stack
    rt = ws.runtime
    assert _cli(rt, monkeypatch, "serve", "status")[0] == 0
    switch_version(model_repository(rt), state.grpc_url, 1, 2)  # switched by hand: the store still records v1
    code, status = _cli(rt, monkeypatch, "serve", "status")
    assert code == 1 and status["recorded"] == 1 and status["triton"][GENERATE] == [2] and not status["agree"]
    assert any("records version 1" in d and f"{GENERATE} has [2]" in d for d in status["differences"])

    code, result = _cli(rt, monkeypatch, "serve", "reconcile")
    assert code == 0 and result["changed"] and result["after"]["agree"]
    assert served_by_model(state.grpc_url) == {model: [1] for model in MODELS}
    assert _cli(rt, monkeypatch, "serve", "status")[0] == 0


def _configured(rt) -> list[int]:
    path = repository_path(rt) / GENERATE / "config.pbtxt"
    return list(validate_config(path.read_text(), str(path)).version_policy.specific.versions)


def test_a_killed_server_fails_a_publish_that_is_undone_its_stubs_are_reaped_and_the_endpoint_answers_503(stack):
    ws, state, url = stack
    rt = ws.runtime
    stubs = [p for p in group_members(state.pid) if p != state.pid]
    assert stubs  # the python-backend stubs run in the server's process group
    os.kill(stubs[0], signal.SIGSTOP)  # a stub that reacts to nothing (one ignored SIGTERM for 10 minutes)
    os.kill(state.pid, signal.SIGKILL)
    os.waitpid(state.pid, 0)

    with pytest.raises(PublishError, match="the switch was undone"):
        publish_model(rt, "2", actor="test")
    assert _configured(rt) == [1] and recorded_number(rt) == 1  # the configs serve what the store records

    models = httpx.get(f"{url}/models", timeout=60)
    assert models.status_code == 503 and _error(models)["code"] == "backend_unavailable"
    for stream in (False, True):
        response = _post(url, {"temperature": 0}, stream)
        assert response.status_code == 503 and "unavailable" in _error(response)["message"]

    assert stubs[0] in group_members(state.pid)  # it outlived its server...
    stop_server(server_dir(rt))
    assert group_members(state.pid) == []  # ...until the launcher's stop reaped the server's whole group
