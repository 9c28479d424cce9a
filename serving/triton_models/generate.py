"""The ``generate`` model: decoupled token streaming with continuous batching (:mod:`serving.batching`).

``execute`` validates each request, hands it to the scheduler thread and returns at once; the thread
streams one response per new token through the request's response sender and ends each stream with a
final flag (or an error response). The decode step runs onnxruntime in-process on the version folder's own
copy of the graph (default) or calls the ``lm`` model through BLS (``decode_backend: bls``);
benchmarks/bench_serving.py measures both.

A stream the client cancels (gRPC ``stop_stream(cancel_requests=True)``, a closed connection) is seen
through its response sender's ``is_cancelled()`` at the next decode step and leaves the batch, freeing its
slot. The scheduler's state is exported on Triton's metrics endpoint (Prometheus text), labelled with the
model version: ``lmforge_generate_slots_active`` and ``lmforge_generate_queued`` (gauges),
``lmforge_generate_tokens_total``, ``lmforge_generate_streams_finished_total`` and
``lmforge_generate_streams_cancelled_total`` (counters).
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from serving.batching import ContinuousBatcher, GenerationRequest, GraphShape, RequestError, StepFn, sampling_params
from serving.onnx_files import ONNX_FILE, input_names, ort_session, ort_step, output_names, read_manifest
from serving.triton_models.common import CANCEL_KEY, STREAM_KEY, TOKENIZER_META, ModelArgs

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def _bls_step(version: int, n_layers: int) -> StepFn:
    names_in, names_out = input_names(n_layers), output_names(n_layers)

    def step(ids: np.ndarray, positions: np.ndarray, mask: np.ndarray,
             past: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        tensors = [pb_utils.Tensor(n, np.ascontiguousarray(v)) for n, v in zip(names_in, [ids, positions, mask, *past], strict=True)]
        response = pb_utils.InferenceRequest(model_name="lm", model_version=version, inputs=tensors,
                                             requested_output_names=names_out).exec()
        if response.has_error():
            raise RuntimeError(f"lm model: {response.error().message()}")
        out = [pb_utils.get_output_tensor_by_name(response, n).as_numpy() for n in names_out]
        return out[0], out[1:]

    return step


# Every SchedulerMetrics of this stub, kept until the process ends. Triton (2.51) shares a metric family, and a
# metric with the same labels, between every instance that creates one of that name: a reload starts the new
# instance before the old one finalizes, and an old instance deleting its family or metrics freed what the new
# one still wrote to. Under traffic during a version switch that corrupted the server's heap (SIGABRT,
# "malloc(): unaligned fastbin chunk detected"). So nothing here is ever deleted.
_KEPT: list[SchedulerMetrics] = []


class SchedulerMetrics:
    """The batcher's slots and counts as custom metrics of the python backend (Triton's /metrics)."""

    GAUGES = {"slots_active": "occupied continuous-batching slots", "queued": "requests waiting for a slot"}
    COUNTERS = {"tokens_total": "tokens streamed", "streams_finished_total": "streams ended, for any reason",
                "streams_cancelled_total": "streams cancelled by their client (or gone) before the end"}

    def __init__(self, version: int) -> None:
        labels = {"model": "generate", "version": str(version)}
        _KEPT.append(self)  # never deleted while the stub lives: see _KEPT
        kinds = [(n, d, pb_utils.MetricFamily.GAUGE) for n, d in self.GAUGES.items()]
        kinds += [(n, d, pb_utils.MetricFamily.COUNTER) for n, d in self.COUNTERS.items()]
        self.families = {n: pb_utils.MetricFamily(name=f"lmforge_generate_{n}", description=d, kind=k)
                         for n, d, k in kinds}
        self.metrics = {n: family.Metric(labels=labels) for n, family in self.families.items()}
        self.sent = dict.fromkeys(self.COUNTERS, 0)

    def __call__(self, batcher: ContinuousBatcher) -> None:
        self.metrics["slots_active"].set(batcher.active)
        self.metrics["queued"].set(batcher.queued)
        totals = {"tokens_total": batcher.stats.tokens, "streams_finished_total": batcher.stats.finished,
                  "streams_cancelled_total": batcher.stats.cancelled}
        for name, total in totals.items():
            if total > self.sent[name]:
                self.metrics[name].increment(total - self.sent[name])
                self.sent[name] = total


class _Stream:
    """One request's response sender, as the batcher's callbacks: they queue responses for
    :class:`_Responses` and return at once. A send that failed (the client went away) is raised by the
    stream's next token, which the batcher takes as a cancellation."""

    def __init__(self, sender: Any, responses: _Responses) -> None:
        self.sender, self.responses = sender, responses
        self.failed: Exception | None = None

    def token(self, token: int) -> None:
        if self.failed is not None:
            raise self.failed
        self.responses.put(self, token)

    def finish(self, reason: str, error: str | None) -> None:
        self.responses.put(self, None if error is None or reason != "error" else error)


class _Responses:
    """Sends every stream's responses from a thread of its own. A send is a round trip to the server
    process (the stub waits until the parent has taken the response): made by the scheduler thread, 16
    of them per step held the next decode step back longer than the step itself took. One FIFO keeps
    each stream's tokens and its final response in order."""

    _STOP = object()

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[_Stream, Any]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="lmforge-responses", daemon=True)
        self._thread.start()

    def put(self, stream: _Stream, item: int | str | None) -> None:
        """``item``: a token id, None for the final flag, or an error message (final error response)."""
        self._queue.put((stream, item))

    def close(self, timeout: float = 10.0) -> None:
        self._queue.put((None, self._STOP))  # type: ignore[arg-type]
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            stream, item = self._queue.get()
            if item is self._STOP:
                return
            if stream.failed is not None and isinstance(item, int):
                continue  # its final response is still sent: only that releases the request's response factory
            try:
                if isinstance(item, int):
                    stream.sender.send(pb_utils.InferenceResponse(
                        [pb_utils.Tensor("token_id", np.array([item], dtype=np.int64))]))
                elif item is None:
                    stream.sender.send(flags=FINAL)
                else:
                    stream.sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"generate: {item}")),
                                       flags=FINAL)
            except Exception as exc:  # the stream is gone: its slot is freed at its next token
                stream.failed = stream.failed or exc


class _KeyedStreams:
    """Streams a caller named with a ``STREAM_KEY`` parameter, so that a later request with ``CANCEL_KEY``
    can stop them: Triton 2.51's python backend cannot cancel a BLS request, so ``generate_text`` stops the
    stream it opened this way when its own client cancels. Only live streams are kept."""

    def __init__(self) -> None:
        self._live: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def track(self, key: str | None, on_finish: Callable[[str, str | None], None],
              is_cancelled: Callable[[], bool]) -> tuple[Callable[[str, str | None], None], Callable[[], bool]]:
        """The request's callbacks; with a key, cancellable by it and forgotten when the stream ends."""
        if key is None:
            return on_finish, is_cancelled
        flag = threading.Event()
        with self._lock:
            self._live[str(key)] = flag

        def finish(reason: str, error: str | None) -> None:
            with self._lock:
                self._live.pop(str(key), None)
            on_finish(reason, error)

        return finish, lambda: flag.is_set() or is_cancelled()

    def cancel(self, key: str) -> None:
        with self._lock:
            flag = self._live.get(key)
        if flag is not None:
            flag.set()


class GenerateModel:
    def __init__(self, args: dict[str, Any]) -> None:
        self.args = a = ModelArgs.parse(args)
        # small per-step tensor ops: a thread pool costs far more than it saves (measured 1.6 vs 31 ms a step
        # for 16 rows on a loaded 2-core machine), and the stub shares the cores with the server
        torch.set_num_threads(a.int_param("threads", 1))
        model_cfg = read_manifest(a.directory)["model"]
        shape = GraphShape.from_model_config(model_cfg)
        if a.parameters.get("decode_backend", "inprocess") == "bls":
            step = _bls_step(a.version, shape.n_layers)
        else:
            session = ort_session(a.directory / ONNX_FILE, threads=a.int_param("threads", 1))
            step = lambda *xs: ort_step(session, *xs)  # noqa: E731
        eos = json.loads((a.directory / TOKENIZER_META).read_text())["eos_id"]
        self.limit = a.int_param("max_tokens_limit", 256)
        self.metrics = SchedulerMetrics(a.version)
        self.responses = _Responses()
        self.keyed = _KeyedStreams()
        self.batcher = ContinuousBatcher(step, shape, max_slots=a.int_param("max_slots", 8), eos_id=eos,
                                         max_tokens_limit=self.limit, observer=self.metrics).start()

    def _submit(self, request: Any) -> None:
        sender = request.get_response_sender()
        try:
            raw = json.loads(request.parameters() or "{}")
            key = raw.pop(STREAM_KEY, None)
            if CANCEL_KEY in raw:  # a control request: stop the keyed stream, answer with the final flag only
                self.keyed.cancel(str(raw[CANCEL_KEY]))
                sender.send(flags=FINAL)
                return
            tensor = pb_utils.get_input_tensor_by_name(request, "input_ids")
            prompt = tensor.as_numpy().reshape(-1).tolist()
            params = sampling_params(raw, self.limit)
            stream = _Stream(sender, self.responses)
            on_finish, is_cancelled = self.keyed.track(key, stream.finish, sender.is_cancelled)
            self.batcher.submit(GenerationRequest(prompt, params, on_token=stream.token, on_finish=on_finish,
                                                  is_cancelled=is_cancelled))
        except (RequestError, ValueError, TypeError) as exc:
            sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"generate: {exc}")), flags=FINAL)

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            self._submit(request)
        return None

    def finalize(self) -> None:
        self.batcher.close()
        self.responses.close()
