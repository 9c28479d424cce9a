"""The continuous batcher on the exported graph (onnxruntime, no server): joining a running batch,
exactness against the PyTorch network, cancellation freeing its slot, request validation."""

from __future__ import annotations

import threading
import time

import pytest
from serving_helpers import greedy_reference, tiny_model, tiny_tokenizer

from model.decoding import SamplingParams
from serving.batching import ContinuousBatcher, GenerationRequest, GraphShape, RequestError, sampling_params
from serving.onnx_export import export_onnx
from serving.onnx_files import ort_session, ort_step

TEXTS = ["Return a JSON string", "x", "The textwrap module provides some convenience functions", "named tuple",
         "Deserialize a document", "dict subclass"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tok = tiny_tokenizer()
    model = tiny_model(tok.vocab_size)
    export = export_onnx(model, tmp_path_factory.mktemp("batching"), tok.encode(TEXTS[2]))
    session = ort_session(export.onnx_path, threads=1)
    return tok, model, export, session


def batcher(setup, slots, delay=0.0, limit=64, **options):
    tok, _, export, session = setup

    def step(*xs):
        time.sleep(delay)  # a slower network: requests surely arrive while others decode
        return ort_step(session, *xs)

    return ContinuousBatcher(step, GraphShape.from_model_config(export.config), max_slots=slots, eos_id=tok.eos_id,
                             max_tokens_limit=limit, **options).start()


class Collector:
    def __init__(self):
        self.tokens, self.reason, self.done = [], None, threading.Event()

    def request(self, prompt, cancel_after=None, **params):
        def cancelled():
            return cancel_after is not None and len(self.tokens) >= cancel_after

        return GenerationRequest(prompt, SamplingParams(**params), self.tokens.append, self.finish, cancelled)

    def finish(self, reason, error):
        self.reason = (reason, error)
        self.done.set()


def test_requests_join_the_running_batch_and_each_equals_pytorch(setup):
    tok, model, _, _ = setup
    b = batcher(setup, slots=8, delay=0.003)
    prompts = [tok.encode(t) for t in TEXTS]
    collectors = [Collector() for _ in prompts]
    for i, (p, c) in enumerate(zip(prompts, collectors)):
        b.submit(c.request(p, max_new_tokens=8 + 2 * i, temperature=0.0))
        time.sleep(0.01)
    assert all(c.done.wait(60) for c in collectors)
    b.close()
    for i, (p, c) in enumerate(zip(prompts, collectors)):
        assert c.tokens == greedy_reference(model, p, 8 + 2 * i, tok.eos_id)
    assert b.stats.joined_running_batch >= 1 and b.stats.max_batch >= 2
    assert b.active == 0


def test_a_cancelled_stream_frees_its_slot_for_the_next_request(setup):
    tok, model, _, _ = setup
    b = batcher(setup, slots=1, delay=0.002, cancel_poll_s=0.02)
    first, second = Collector(), Collector()
    b.submit(first.request(tok.encode(TEXTS[0]), cancel_after=3, max_new_tokens=60, temperature=0.0))
    b.submit(second.request(tok.encode(TEXTS[1]), max_new_tokens=5, temperature=0.0))
    assert first.done.wait(30) and second.done.wait(30)
    b.close()
    assert first.reason == ("cancelled", None) and 3 <= len(first.tokens) < 60
    assert second.tokens == greedy_reference(model, tok.encode(TEXTS[1]), 5, tok.eos_id)
    assert b.stats.cancelled == 1 and b.active == 0


@pytest.mark.parametrize(("poll_s", "asks"), [(3600.0, 1), (0.0, 1 + 19)])
def test_cancellation_is_asked_for_at_most_once_per_poll_interval(setup, poll_s, asks):
    """Each ask is a round trip to the server in Triton: with a long interval a stream is asked once, when it
    is admitted; with none, before each of its decode steps (20 tokens: 19 steps after the prefill)."""
    tok, model, _, _ = setup
    b = batcher(setup, slots=2, cancel_poll_s=poll_s)
    c, calls = Collector(), []
    prompt = tok.encode(TEXTS[0])
    b.submit(GenerationRequest(prompt, SamplingParams(max_new_tokens=20, temperature=0.0), c.tokens.append, c.finish,
                               lambda: calls.append(1) or False))
    assert c.done.wait(30)
    b.close()
    assert c.tokens == greedy_reference(model, prompt, 20, tok.eos_id) and len(c.tokens) == 20
    assert len(calls) == asks


def test_a_client_that_went_away_is_treated_as_cancelled(setup):
    tok, _, _, _ = setup
    b = batcher(setup, slots=2)
    done = Collector()

    def broken(_token):
        raise ConnectionError("stream closed")

    b.submit(GenerationRequest(tok.encode(TEXTS[0]), SamplingParams(max_new_tokens=20, temperature=0.0), broken,
                               done.finish))
    assert done.done.wait(30)
    b.close()
    assert done.reason[0] == "cancelled" and "stream closed" in done.reason[1]


@pytest.mark.parametrize(("prompt", "params", "message"), [
    ([], {}, "prompt is empty"),
    (list(range(64)), {}, "context is 64"),
    ([10**6], {}, "outside the vocabulary"),
    ([3], {"max_new_tokens": 65}, "exceeds this server's limit 64"),
    ([3], {"top_p": 0.0}, "top_p"),
    ([3], {"num_beams": 2, "temperature": 0.0}, "beam search"),
    ([3], {"temperature": 1e-300}, "'temperature' must be between 0.01 and 5.0"),
    ([3], {"repetition_penalty": 1e-300}, "'repetition_penalty' must be between"),
    ([3], {"seed": 2**64}, "fit a 64-bit integer"),
])
def test_bad_requests_are_refused_with_the_reason(setup, prompt, params, message):
    b = batcher(setup, slots=1)
    try:
        with pytest.raises(RequestError, match=message):
            b.submit(Collector().request(prompt, **params))
    finally:
        b.close()


def test_request_parameters_become_sampling_parameters():
    params = sampling_params('{"max_tokens": 5, "temperature": "0.7", "top_k": 4, "seed": 3}', 48)
    assert (params.max_new_tokens, params.temperature, params.top_k, params.seed) == (5, 0.7, 4, 3)
    assert sampling_params("{}", 16).max_new_tokens == 16
    with pytest.raises(RequestError, match="unknown request parameter 'topk'"):
        sampling_params({"topk": 3}, 48)
    with pytest.raises(RequestError, match="'top_k' must be int"):
        sampling_params({"top_k": 0.5}, 48)
    with pytest.raises(RequestError, match="must be a number"):
        sampling_params({"temperature": "hot"}, 48)
    assert sampling_params({"temperature": 0}, 48).greedy  # 0 (greedy) lies below the safe range, and is allowed


@pytest.mark.parametrize(("raw", "message"), [
    ({"temperature": 1e-300}, "'temperature' must be between 0.01 and 5.0 \\(or 0 for greedy\\), got 1e-300"),
    ({"temperature": "1e-300"}, "'temperature' must be between"),  # as BLS carries it: text
    ({"repetition_penalty": 1e-300}, "'repetition_penalty' must be between 0.01 and 100.0"),
    ({"repetition_penalty": 1e300}, "'repetition_penalty' must be between"),
    ({"max_tokens": 2**63}, "'max_tokens' must fit a 64-bit integer"),
    ({"seed": 2**64}, "'seed' must fit a 64-bit integer"),
])
def test_sampling_parameters_outside_their_safe_range_are_refused(raw, message):
    with pytest.raises(RequestError, match=message):
        sampling_params(raw, 48)


def test_a_row_whose_sampling_fails_ends_only_its_own_stream(setup):
    """Row 0 of every shared step gets NaN logits (what an overflowing temperature made of it): its draw raises,
    its stream ends with the reason, and the other stream of the batch runs to its end."""
    tok, _, export, session = setup

    def poisoned(ids, positions, mask, past):
        logits, present = ort_step(session, ids, positions, mask, past)
        if len(ids) > 1:
            logits = logits.copy()
            logits[0] = float("nan")
        return logits, present

    b = ContinuousBatcher(poisoned, GraphShape.from_model_config(export.config), max_slots=2, eos_id=None,
                          max_tokens_limit=64)
    bad, good = Collector(), Collector()
    b.submit(bad.request(tok.encode(TEXTS[0]), max_new_tokens=30, temperature=1.0, seed=1))
    b.submit(good.request(tok.encode(TEXTS[1]), max_new_tokens=30, temperature=1.0, seed=2))
    b.start()  # both wait in the queue before the scheduler starts: they are prefilled as one batch
    assert bad.done.wait(30) and good.done.wait(30)
    b.close()
    assert bad.reason[0] == "error" and "sampling the next token failed" in bad.reason[1] and bad.tokens == []
    assert good.reason == ("length", None) and len(good.tokens) == 30


def test_closing_ends_the_running_and_the_queued_streams_with_an_error_and_refuses_new_ones(setup):
    tok, model, _, _ = setup
    full = greedy_reference(model, tok.encode(TEXTS[0]), 40, tok.eos_id)
    assert len(full) > 3  # the stream surely still runs when the batcher closes
    b = batcher(setup, slots=1, delay=0.02)
    running, queued = Collector(), Collector()
    b.submit(running.request(tok.encode(TEXTS[0]), max_new_tokens=40, temperature=0.0))
    b.submit(queued.request(tok.encode(TEXTS[1]), max_new_tokens=5, temperature=0.0))
    deadline = time.monotonic() + 30
    while not running.tokens and time.monotonic() < deadline:
        time.sleep(0.01)
    b.close()
    assert running.done.is_set() and queued.done.is_set()
    assert running.reason[0] == "error" and "cut after" in running.reason[1] and 0 < len(running.tokens) < len(full)
    assert queued.reason[0] == "error" and "before generation started" in queued.reason[1] and queued.tokens == []
    with pytest.raises(RequestError, match="shutting down"):
        b.submit(Collector().request(tok.encode(TEXTS[1]), max_new_tokens=5, temperature=0.0))
