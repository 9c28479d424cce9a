"""Against a real Triton server: greedy generation equals PyTorch over gRPC and HTTP, streaming, continuous
batching under concurrency, bad requests, the gate guard, idempotent publishing, publish while serving,
rollback, the text entry, the CLI."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from serving_helpers import PROMPTS, gate, greedy_reference, make_workspace, register, tiny_model
from typer.testing import CliRunner

from flows.cli import app
from lmforge_core.metadata import repository as repo
from lmforge_core.metadata import review_repository as reviews
from model.eval_metrics import Interval
from model.weights import sha256_file
from serving.client import LMClient, ServingError, astream
from serving.loadtest import run_load
from tasks.evaluate.gate import Figures, judge, record_gate
from tasks.publish.publish import PublishError, publish_model, repository_path, rollback_serving

pytestmark = pytest.mark.slow


def ref(served, prompt_ids, n, version=1):
    return greedy_reference(served.workspace.models[version], prompt_ids, n, served.workspace.tokenizer.eos_id)


@pytest.fixture(scope="module")
def client(served):
    c = LMClient(served.grpc, served.http, timeout=60)
    yield c
    c.close()


def encode(served, text):
    return served.workspace.tokenizer.encode(text)


def test_greedy_over_grpc_and_http_equals_pytorch(served, client):
    for text in PROMPTS[:3]:
        ids = encode(served, text)
        expected = ref(served, ids, 12)
        assert client.generate(ids, max_tokens=12, temperature=0.0).tokens == expected
        assert list(client.http_stream(ids, max_tokens=12, temperature=0.0)) == expected
    assert client.http_tokenize(PROMPTS[0]) == client.tokenize(PROMPTS[0]) == encode(served, PROMPTS[0])


def test_streaming_yields_the_tokens_in_order_as_they_come(served, client):
    ids = encode(served, PROMPTS[2])
    expected = ref(served, ids, 16)
    stamps, got = [], []
    for token in client.stream(ids, max_tokens=16, temperature=0.0):
        got.append(token)
        stamps.append(time.perf_counter())
    assert got == expected and len(set(stamps)) > 1  # one response per token, not one batch at the end

    async def collect():
        return [t async for t in astream(served.grpc, ids, max_tokens=16, temperature=0.0)]

    assert asyncio.run(collect()) == expected


def test_eight_concurrent_requests_of_different_lengths_each_equal_their_one_by_one_result(served, client):
    prompts = [encode(served, t) for t in PROMPTS]
    lengths = [6 + 3 * i for i in range(8)]
    alone = [client.generate(p, max_tokens=n, temperature=0.0).tokens for p, n in zip(prompts, lengths)]
    results, windows = [None] * 8, [None] * 8

    def run(i):
        start = time.perf_counter()
        results[i] = LMClient(served.grpc, timeout=60).generate(prompts[i], max_tokens=lengths[i], temperature=0.0)
        windows[i] = (start, start + results[i].latency_s)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert [r.tokens for r in results] == alone
    assert alone == [ref(served, p, n) for p, n in zip(prompts, lengths)]
    overlapping = sum(1 for i in range(8) for j in range(8) if i != j and windows[i][0] < windows[j][1]
                      and windows[j][0] < windows[i][1])
    assert overlapping > 0  # they were in flight together


def _infer_error(served, model, tensor, version="", **params):
    c = grpcclient.InferenceServerClient(served.grpc)
    errors = []
    c.start_stream(callback=lambda result, error: errors.append(error))
    c.async_stream_infer(model, [tensor], model_version=version, parameters=params)
    deadline = time.time() + 30
    while not errors and time.time() < deadline:
        time.sleep(0.05)
    c.stop_stream()
    c.close()
    return str(errors[0]) if errors and errors[0] is not None else ""


def _ids(values, dtype="INT64", shape=None):
    arr = np.asarray(values, dtype=np.float32 if dtype == "FP32" else np.int64)
    if shape:
        arr = arr.reshape(shape)
    t = grpcclient.InferInput("input_ids", list(arr.shape), dtype)
    t.set_data_from_numpy(arr)
    return t


def test_bad_requests_get_a_clear_error_and_the_server_keeps_serving(served, client):
    ctx = served.workspace.models[1].config.context
    wrong_dtype = _infer_error(served, "generate", _ids([1, 2], "FP32"))
    assert "FP32" in wrong_dtype and "INT64" in wrong_dtype
    assert "shape" in _infer_error(served, "generate", _ids([1, 2, 3, 4], shape=(2, 2)))
    assert "prompt is empty" in _infer_error(served, "generate", _ids(np.zeros(0, dtype=np.int64)))
    assert "exceeds this server's limit 48" in _infer_error(served, "generate", _ids([5, 6]), max_tokens=49)
    assert f"context is {ctx}" in _infer_error(served, "generate", _ids(list(range(5, 5 + ctx))))
    assert "unknown request parameter 'temprature'" in _infer_error(served, "generate", _ids([5]), temprature=0.5)
    assert "outside the vocabulary" in _infer_error(served, "generate", _ids([10**6]))
    unknown = _infer_error(served, "no_such_model", _ids([5]))
    assert "unknown model" in unknown.lower() and "no_such_model" in unknown
    assert "version 99" in _infer_error(served, "generate", _ids([5]), version="99")
    with pytest.raises(ServingError, match="generate at"):
        client.generate([], max_tokens=4)
    ids = encode(served, PROMPTS[0])
    assert client.generate(ids, max_tokens=6, temperature=0.0).tokens == ref(served, ids, 6)


def test_the_text_entry_and_the_cli_generate_the_model_text(served, client, monkeypatch):
    ids = encode(served, PROMPTS[0])
    expected = served.workspace.tokenizer.decode(ref(served, ids, 10))
    assert "".join(client.stream_text(PROMPTS[0], max_tokens=10, temperature=0.0)) == expected.rstrip("\ufffd")
    monkeypatch.setenv("LMFORGE_WORKSPACE", str(served.workspace.runtime.settings.workspace))
    out = CliRunner().invoke(app, ["generate", PROMPTS[0], "--max-tokens", "10", "--temperature", "0",
                                   "--url", served.grpc, "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["text"] == expected.rstrip("\ufffd")
    status = CliRunner().invoke(app, ["triton", "status", "--json"])
    assert status.exit_code == 0 and '"ready": true' in status.output and '"metrics_ok": true' in status.output


def test_triton_up_on_the_repository_it_already_serves_reports_the_running_server(served, monkeypatch):
    # issue 21: a second `lmforge triton up` (as `make run` may start it) failed with "already runs"
    monkeypatch.setenv("LMFORGE_WORKSPACE", str(served.workspace.runtime.settings.workspace))
    out = CliRunner().invoke(app, ["triton", "up", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["already_running"] is True and (data["pid"], data["grpc_port"]) == (served.state.pid,
                                                                                     served.state.grpc_port)
    plain = CliRunner().invoke(app, ["triton", "up"])
    assert plain.exit_code == 0 and f"Triton already runs pid {served.state.pid}" in plain.output, plain.output
    status = CliRunner().invoke(app, ["triton", "status", "--json"])  # the same server, still ready
    assert status.exit_code == 0 and json.loads(status.output)["pid"] == served.state.pid


def test_loadtest_reports_every_request(served):
    prompts = [encode(served, t) for t in PROMPTS[:4]]
    report = run_load(served.grpc, prompts, concurrency=4, requests=8, max_tokens=8)
    assert report.requests == 8 and report.errors == 0
    assert report.tokens_per_s > 0 and report.latency_ms_p50 <= report.latency_ms_p95 <= report.latency_ms_p99


def _tree(folder):
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _deployments(rt):
    with rt.metadata.session() as session:
        return len(repo.list_deployments(session))


def _needs_review(rt, number):
    """A gate decision asking for review: a bias interval that straddles its bound."""
    figures = Figures(perplexity={"ds-000001": 50.0}, bias={"loglik_gap/age": Interval(0.9, 0.6, 1.3)})
    with rt.metadata.session() as session:
        verdict, checks = judge("ds-000001", figures, None, None, rt.settings.evaluate.gate)
        record_gate(session, repo.get_model_version(session, rt.settings.model_name, number), verdict, checks, None, None)
        return verdict.value


def test_only_a_version_the_gate_passed_is_published_and_a_refusal_leaves_the_repository_untouched(served):
    rt, tok = served.workspace.runtime, served.workspace.tokenizer
    ungated, rejected, unreviewed = (register(rt, tiny_model(tok.vocab_size, seed=s), f"run-gate-{s}") for s in (3, 4, 5))
    assert gate(rt, rejected, perplexity=5000.0) == "reject"
    assert _needs_review(rt, unreviewed) == "needs_review"
    repository = repository_path(rt)
    before, deployments = _tree(repository), _deployments(rt)
    refusals = {ungated: f"lmforge:v{ungated} has no gate decision; run `lmforge evaluate {ungated}`",
                rejected: f"lmforge:v{rejected} was rejected by the promotion gate and can never be published",
                unreviewed: f"lmforge:v{unreviewed} needs a reviewer's approval before it can be published"}
    for number, message in refusals.items():
        with pytest.raises(PublishError, match=f"{re.escape(message)}; nothing was published"):
            publish_model(rt, str(number), actor="test")
        assert not (rt.settings.workspace / "exports" / "onnx" / f"lmforge-v{number}").exists()  # refused first
    assert _tree(repository) == before and _deployments(rt) == deployments
    assert not any(rt.artifacts.exists(f"triton/lmforge/{n}/publish.json") for n in refusals)


def test_publishing_a_published_version_again_is_an_audited_no_op(served):
    rt, first = served.workspace.runtime, served.published
    repository = repository_path(rt)
    before, deployments = _tree(repository), _deployments(rt)
    again = publish_model(rt, "1", actor="ada")
    assert again.reused and not first.reused
    assert (again.model_version, again.triton_version, again.repository, again.parity_max_abs, again.verification) == (
        first.model_version, first.triton_version, first.repository, first.parity_max_abs, first.verification)
    assert again.verification["equal"] and again.verification["prompts"] == 3
    assert _tree(repository) == before and _deployments(rt) == deployments
    with rt.metadata.session() as session:
        event = reviews.audit_events(session, actor="ada")[0]
        assert (event.action, event.target) == ("serve.publish.noop", "lmforge:v1")
        assert event.details["onnx_sha256"] == sha256_file(repository / "lm" / "1" / "model.onnx")


def test_the_same_version_number_with_another_graph_is_refused_naming_both_hashes(served, tmp_path):
    repository = repository_path(served.workspace.runtime)
    recorded = sha256_file(repository / "lm" / "1" / "model.onnx")
    before = _tree(repository)
    other = make_workspace(tmp_path, seeds=(7,), repository=str(repository))  # another registry, same repository
    try:
        with pytest.raises(PublishError, match="Triton version 1 .* is already published") as refused:
            publish_model(other.runtime, "1", actor="test")
        exported = sha256_file(other.runtime.settings.workspace / "exports" / "onnx" / "lmforge-v1" / "model.onnx")
    finally:
        other.runtime.metadata.dispose()
    assert exported != recorded and recorded in str(refused.value) and exported in str(refused.value)
    assert "versions are immutable" in str(refused.value)
    assert _tree(repository) == before


def test_publish_while_streaming_loses_no_request_and_rollback_serves_v1_again(served):
    rt = served.workspace.runtime
    ids = encode(served, PROMPTS[1])
    v1, v2 = ref(served, ids, 10, 1), ref(served, ids, 10, 2)
    assert v1 != v2
    outcomes, stop = [], threading.Event()

    def traffic():
        c = LMClient(served.grpc, timeout=60)
        while not stop.is_set():
            try:
                outcomes.append(c.generate(ids, max_tokens=10, temperature=0.0).tokens)
            except ServingError as exc:
                outcomes.append(exc)
            time.sleep(0.1)  # steady traffic, without starving the verification server of CPU
        c.close()

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        result = publish_model(rt, "2", actor="test")
    finally:
        time.sleep(1.0)
        stop.set()
        worker.join(60)
    assert result.served_by == served.grpc and result.triton_version == 2
    assert outcomes and all(o in (v1, v2) for o in outcomes), [o for o in outcomes if o not in (v1, v2)][:3]
    c = LMClient(served.grpc, timeout=60)
    assert c.generate(ids, max_tokens=10, temperature=0.0).tokens == v2

    back = rollback_serving(rt, actor="test", reason="test rollback")
    assert back["triton_version"] == 1 and back["from_version"] == 2
    assert c.generate(ids, max_tokens=10, temperature=0.0).tokens == v1
    with rt.metadata.session() as session:
        history = repo.alias_history(session, rt.settings.model_name, "serving")
        assert [(e.model_version.version, e.is_rollback) for e in history] == [(1, False), (2, False), (1, True)]
        assert [d.triton_version for d in reversed(repo.list_deployments(session))] == [1, 2, 1]
