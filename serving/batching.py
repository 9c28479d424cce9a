"""Continuous (in-flight) batching over the exported network's KV cache.

Requests that arrive while others decode join the running batch at the next step and leave it when they
finish; each sequence slot owns its own KV cache (one (1, kv_heads, length, head_dim) array per layer and
kind). A decode step left-pads the slots' caches to the longest, marks the padding in ``attention_mask``
and gives every row its own position, so rows of different lengths share one forward of the graph
(the padded-batch case the export's parity check covers). Newly admitted prompts are prefilled together
the same way. A failed stream leaves the batch at the next step and frees its slot, a cancelled one
within ``CANCEL_POLL_S`` (asking for cancellation is a round trip to the server in Triton).

The scheduler runs in its own thread: Triton's decoupled python model hands requests over and returns at
once (a synchronous ``execute`` would hold every other request until its stream ended). The network is a
``StepFn``, so the same scheduler drives onnxruntime in-process or the ``lm`` model through BLS.
Sampling is the decoding library's (``model.decoding``): one set of logits processors for every path.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from model.decoding import SamplingParams, make_generator, sample_next
from serving.triton_models.common import CANCEL_POLL_S

log = logging.getLogger(__name__)
_SERIALS = itertools.count()

# (input_ids, position_ids, attention_mask, past) -> (logits, present); arrays as the ONNX graph takes them
StepFn = Callable[[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]], tuple[np.ndarray, list[np.ndarray]]]


# request parameter -> (SamplingParams field, accepted Python types)
SAMPLING_PARAMETERS: dict[str, tuple[str, tuple[type, ...]]] = {
    "max_tokens": ("max_new_tokens", (int,)),
    "temperature": ("temperature", (int, float)),
    "top_k": ("top_k", (int,)),
    "top_p": ("top_p", (int, float)),
    "min_p": ("min_p", (int, float)),
    "repetition_penalty": ("repetition_penalty", (int, float)),
    "seed": ("seed", (int,)),
}
DEFAULT_MAX_TOKENS = 64
# numerically safe ranges of the float parameters (inclusive). Dividing fp32 logits by a temperature or a
# repetition penalty near 0 overflows them to inf, the softmax to NaN, and the draw raises: 1e-300 did so
# inside a shared batch. Temperature 0 (greedy) stays allowed below the range.
SAFE_RANGES: dict[str, tuple[float, float]] = {"temperature": (0.01, 5.0), "repetition_penalty": (0.01, 100.0)}
INT64_MAX = 2**63 - 1  # every integer parameter travels as a Triton INT64


class RequestError(ValueError):
    """A generation request the server refuses; the message names the field and the limit."""


@dataclass(frozen=True)
class GraphShape:
    n_layers: int
    kv_heads: int
    head_dim: int
    context: int
    vocab_size: int

    @classmethod
    def from_model_config(cls, cfg: dict[str, Any]) -> GraphShape:
        return cls(cfg["n_layers"], cfg.get("n_kv_heads") or cfg["n_heads"], cfg["dim"] // cfg["n_heads"],
                   cfg["context"], cfg["vocab_size"])


@dataclass
class GenerationRequest:
    prompt: list[int]
    params: SamplingParams
    on_token: Callable[[int], None]
    on_finish: Callable[[str, str | None], None]  # (reason: stop | length | cancelled | error, error message)
    is_cancelled: Callable[[], bool] = lambda: False
    submitted_at: float = field(default_factory=time.monotonic)


@dataclass
class _Slot:
    """One sequence: its cache is ``length`` positions of row ``row`` of the arrays ``arrays`` (a step's
    present keys/values), from position ``start``; nothing is copied until the batch changes."""

    request: GenerationRequest
    arrays: list[np.ndarray]
    row: int
    start: int
    length: int
    seen: list[int]
    out: int = 0
    pending: int = -1  # the sampled token not yet fed through the network
    generator: torch.Generator | None = None
    polled_at: float = field(default_factory=time.monotonic)  # when cancellation was last asked for
    serial: int = field(default_factory=lambda: next(_SERIALS))  # identity of the slot (ids get reused)

    def cache(self, layer: int) -> np.ndarray:
        return self.arrays[layer][self.row, :, self.start : self.start + self.length]


@dataclass
class BatcherStats:
    steps: int = 0
    max_batch: int = 0
    finished: int = 0
    cancelled: int = 0
    joined_running_batch: int = 0  # admissions while other sequences were mid-stream
    tokens: int = 0  # tokens streamed to clients


# called by the scheduler thread whenever the slots or the counts changed (the generate model exports them
# as Prometheus metrics); it must not block
Observer = Callable[["ContinuousBatcher"], None]


class ContinuousBatcher:
    """Slots, a request queue and one scheduler thread; :meth:`submit` validates and enqueues."""

    def __init__(self, step: StepFn, shape: GraphShape, *, max_slots: int, eos_id: int | None,
                 max_tokens_limit: int, dtype: np.dtype = np.dtype(np.float32), observer: Observer | None = None,
                 cancel_poll_s: float = CANCEL_POLL_S) -> None:
        if max_slots < 1:
            raise ValueError("max_slots must be >= 1")
        self.step, self.shape, self.max_slots, self.cancel_poll_s = step, shape, max_slots, cancel_poll_s
        self.eos_id, self.max_tokens_limit, self.dtype = eos_id, max_tokens_limit, dtype
        self.stats = BatcherStats()
        self._observer, self._observed = observer, (0, 0, 0, 0)
        self._queue: queue.Queue[GenerationRequest] = queue.Queue()
        self._active: list[_Slot] = []
        self._batch: tuple[list[int], np.ndarray] | None = None  # (member serials, mask of the last step)
        self._stop = threading.Event()
        self._submitting = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="lmforge-batcher", daemon=True)

    def start(self) -> ContinuousBatcher:
        self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Stop the scheduler; every stream still open (running or queued) ends with an error response,
        never silently: a client must not take a cut stream for a finished one."""
        with self._submitting:
            self._stop.set()
        self._thread.join(timeout)

    def validate(self, prompt: list[int], params: SamplingParams) -> None:
        if not prompt:
            raise RequestError("the prompt is empty: send at least one token")
        if len(prompt) >= self.shape.context:
            raise RequestError(f"the prompt has {len(prompt)} tokens; the model's context is {self.shape.context}, "
                               f"so at most {self.shape.context - 1} fit")
        bad = [t for t in prompt if not 0 <= t < self.shape.vocab_size]
        if bad:
            raise RequestError(f"token id {bad[0]} is outside the vocabulary (0..{self.shape.vocab_size - 1})")
        if params.max_new_tokens > self.max_tokens_limit:
            raise RequestError(f"max_tokens {params.max_new_tokens} exceeds this server's limit {self.max_tokens_limit}")
        if params.num_beams != 1:
            raise RequestError("num_beams > 1 (beam search) is not served by the streaming generate model")
        try:
            params.validate()
        except ValueError as exc:
            raise RequestError(str(exc)) from exc
        for key in SAFE_RANGES:
            check_range(key, getattr(params, key))
        if params.seed is not None:
            check_range("seed", params.seed)

    def submit(self, request: GenerationRequest) -> None:
        self.validate(request.prompt, request.params)
        with self._submitting:  # no request slips into the queue after the scheduler drained it
            if self._stop.is_set():
                raise RequestError("the generate model is shutting down")
            self._queue.put(request)

    # --- the scheduler thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._admit()
                if self._active:
                    self._decode()
            except Exception as exc:  # a failed forward ends the affected streams with its reason, never the thread
                log.exception("generate step failed")
                for slot in self._active:
                    self._finish(slot, "error", f"generation failed: {exc}")
                self._active = []
            self._observe()
        self._end_all_at_shutdown()

    def _end_all_at_shutdown(self) -> None:
        reason = "the model version is being unloaded (server shutting down or version switched)"
        for slot in self._active:
            self._finish(slot, "error", f"{reason}; the stream was cut after {slot.out} tokens")
        self._active = []
        while True:
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                return
            self._end(request, "error", f"{reason} before generation started")

    def _observe(self) -> None:
        if self._observer is None:
            return
        now = (self.active, self.stats.tokens, self.stats.finished, self.stats.cancelled)
        if now == self._observed:
            return
        self._observed = now
        try:
            self._observer(self)
        except Exception:  # a failing metrics export must never stop generation
            log.exception("the batcher's observer failed")

    def _admit(self) -> None:
        new: list[GenerationRequest] = []
        if not self._active:
            try:
                new.append(self._queue.get(timeout=0.05))
            except queue.Empty:
                return
        while len(self._active) + len(new) < self.max_slots:
            try:
                new.append(self._queue.get_nowait())
            except queue.Empty:
                break
        live = [r for r in new if not self._cancelled_before_start(r)]
        if live:
            if self._active:
                self.stats.joined_running_batch += len(live)
            self._prefill(live)

    def _cancelled_before_start(self, request: GenerationRequest) -> bool:
        if request.is_cancelled():
            self.stats.cancelled += 1
            request.on_finish("cancelled", None)
            return True
        return False

    def _empty_past(self, batch: int, length: int) -> list[np.ndarray]:
        s = self.shape
        return [np.zeros((batch, s.kv_heads, length, s.head_dim), dtype=self.dtype) for _ in range(2 * s.n_layers)]

    def _prefill(self, requests: list[GenerationRequest]) -> None:
        t = max(len(r.prompt) for r in requests)
        b = len(requests)
        ids, positions, mask = (np.zeros((b, t), dtype=np.int64) for _ in range(3))
        for row, r in enumerate(requests):
            n = len(r.prompt)
            ids[row, t - n:], positions[row, t - n:], mask[row, t - n:] = r.prompt, np.arange(n), 1
        logits, present = self.step(ids, positions, mask, self._empty_past(b, 0))
        slots = [_Slot(r, present, row, t - len(r.prompt), len(r.prompt), list(r.prompt),
                       generator=make_generator(r.params, torch.device("cpu"))) for row, r in enumerate(requests)]
        self._active.extend(slots)
        self._accept_all(slots, logits[:, -1])

    def _decode(self) -> None:
        live = [s for s in self._active if not self._drop_if_done(s)]
        self._active = live
        if not live:
            self._batch = None
            return
        past, mask = self._batch_inputs(live)
        ids = np.array([[s.pending] for s in live], dtype=np.int64)
        positions = np.array([[s.length] for s in live], dtype=np.int64)
        logits, present = self.step(ids, positions, mask, past)
        self.stats.steps += 1
        self.stats.max_batch = max(self.stats.max_batch, len(live))
        total = present[0].shape[2]
        for row, s in enumerate(live):
            s.arrays, s.row, s.length = present, row, s.length + 1
            s.start = total - s.length
        self._batch = ([s.serial for s in live], mask)
        self._accept_all(live, logits[:, -1])

    def _batch_inputs(self, live: list[_Slot]) -> tuple[list[np.ndarray], np.ndarray]:
        """Past keys/values and mask of the step. While the batch keeps its members the last step's present
        arrays already are the left-padded past: reused as they are, without a copy; after a join or a leave
        the slots' caches are gathered into new left-padded arrays."""
        if self._batch is not None and self._batch[0] == [s.serial for s in live]:
            prev_mask = self._batch[1]
            return live[0].arrays, np.concatenate([prev_mask, np.ones((len(live), 1), dtype=np.int64)], axis=1)
        p = max(s.length for s in live)
        past = self._empty_past(len(live), p)
        mask = np.zeros((len(live), p + 1), dtype=np.int64)
        for row, s in enumerate(live):
            for layer, array in enumerate(past):
                array[row, :, p - s.length:] = s.cache(layer)
            mask[row, p - s.length:] = 1
        return past, mask

    def _drop_if_done(self, slot: _Slot) -> bool:
        if self._cancel_due(slot) and slot.request.is_cancelled():
            self.stats.cancelled += 1
            self._finish(slot, "cancelled", None)
            return True
        if slot.length >= self.shape.context:  # no room to feed the pending token
            self._finish(slot, "length", None)
            return True
        return False

    def _cancel_due(self, slot: _Slot) -> bool:
        """Whether the slot's cancellation is to be asked for now (at most every ``cancel_poll_s``)."""
        now = time.monotonic()
        if now - slot.polled_at < self.cancel_poll_s:
            return False
        slot.polled_at = now
        return True

    def _accept_all(self, slots: list[_Slot], logits: np.ndarray) -> None:
        """Sample each slot's next token from its row of ``logits`` (B, V), stream it or finish the slot.

        Greedy rows with equal parameters are sampled in one call (no generator draws, so grouping cannot
        change a row's token); sampled rows each use their own generator, so a seeded request's tokens do
        not depend on what else is in the batch."""
        rows = torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))
        groups: dict[Any, list[int]] = {}
        for i, slot in enumerate(slots):
            key = slot.request.params if slot.request.params.greedy else ("sampled", i)
            groups.setdefault(key, []).append(i)
        tokens: list[int | None] = [None] * len(slots)
        for members in groups.values():
            picked = self._sample_group(slots, members, rows)
            for i, token in zip(members, picked, strict=True):
                tokens[i] = token
        for slot, token in zip(slots, tokens, strict=True):
            if token is not None:
                self._accept(slot, token)
        self._active = [s for s in self._active if s.pending >= 0]

    def _sample_group(self, slots: list[_Slot], members: list[int], rows: torch.Tensor) -> list[int | None]:
        """The group's next tokens; if sampling them fails, only the group's own streams end (with the
        reason) and the rest of the batch goes on."""
        first = slots[members[0]]
        group = rows if len(members) == len(slots) else rows[members]  # one group (the usual case): no copy
        try:
            return sample_next(group, self._history(slots, members), first.request.params, first.generator).tolist()
        except Exception as exc:  # e.g. a distribution that overflowed to NaN: the row's own failure
            log.warning("sampling failed for %d stream(s); they end, the batch goes on: %s", len(members), exc)
            for i in members:
                self._finish(slots[i], "error", f"sampling the next token failed: {exc}")
            return [None] * len(members)

    @staticmethod
    def _history(slots: list[_Slot], members: list[int]) -> torch.Tensor:
        """Tokens each row has seen, -1 padded; only the repetition penalty reads them, so without it the
        (B, 0) history spares building one tensor per row per step."""
        if slots[members[0]].request.params.repetition_penalty == 1.0:
            return torch.empty((len(members), 0), dtype=torch.long)
        width = max(len(slots[i].seen) for i in members)
        seen = torch.full((len(members), width), -1, dtype=torch.long)
        for j, i in enumerate(members):
            seen[j, : len(slots[i].seen)] = torch.tensor(slots[i].seen)
        return seen

    def _accept(self, slot: _Slot, token: int) -> None:
        """Stream ``token`` as the slot's next one, or finish the slot (end token, length)."""
        params = slot.request.params
        if token == self.eos_id or token in params.stop_token_ids:
            self._finish(slot, "stop", None)
            return
        try:
            slot.request.on_token(token)
        except Exception as exc:  # the client went away: its slot is freed like a cancellation
            self.stats.cancelled += 1
            self._finish(slot, "cancelled", f"sending failed: {exc}")
            return
        slot.out += 1
        self.stats.tokens += 1
        slot.seen.append(token)
        if slot.out >= params.max_new_tokens:
            self._finish(slot, "length", None)
            return
        slot.pending = token

    def _finish(self, slot: _Slot, reason: str, error: str | None) -> None:
        slot.pending = -1
        self._end(slot.request, reason, error)

    def _end(self, request: GenerationRequest, reason: str, error: str | None) -> None:
        self.stats.finished += 1
        try:
            request.on_finish(reason, error)
        except Exception:  # the stream is gone; nothing left to tell it
            log.debug("finishing a stream failed", exc_info=True)

    @property
    def active(self) -> int:
        """Occupied slots (sequences in the running batch)."""
        return len(self._active)

    @property
    def queued(self) -> int:
        """Requests waiting for a free slot."""
        return self._queue.qsize()


def sampling_params(raw: str | dict[str, Any], max_tokens_limit: int) -> SamplingParams:
    """Request parameters (Triton's JSON) -> SamplingParams; RequestError names an unknown or mistyped one."""
    given = json.loads(raw) if isinstance(raw, str) else dict(raw)
    values: dict[str, Any] = {"max_new_tokens": min(DEFAULT_MAX_TOKENS, max_tokens_limit)}
    for key, value in given.items():
        if key not in SAMPLING_PARAMETERS:
            raise RequestError(f"unknown request parameter {key!r}; accepted: {', '.join(SAMPLING_PARAMETERS)}")
        field, types = SAMPLING_PARAMETERS[key]
        if float in types and isinstance(value, str):  # BLS parameters carry no floats: sent as text
            try:
                value = float(value)
            except ValueError:
                raise RequestError(f"request parameter {key!r} must be a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, types):
            raise RequestError(f"request parameter {key!r} must be {' or '.join(t.__name__ for t in types)}, "
                             f"got {value!r}")
        check_range(key, value)
        values[field] = float(value) if float in types else value
    return SamplingParams(**values)


def check_range(key: str, value: float) -> None:
    """RequestError unless ``value`` of parameter ``key`` is finite, fits an INT64 and lies in its safe range."""
    if isinstance(value, float) and not math.isfinite(value):
        raise RequestError(f"request parameter {key!r} must be finite, got {value!r}")
    if isinstance(value, int) and not -INT64_MAX - 1 <= value <= INT64_MAX:
        raise RequestError(f"request parameter {key!r} must fit a 64-bit integer (at most {INT64_MAX}), got {value}")
    if key in SAFE_RANGES and not (key == "temperature" and value == 0):
        low, high = SAFE_RANGES[key]
        if not low <= value <= high:
            zero = " (or 0 for greedy)" if key == "temperature" else ""
            raise RequestError(f"request parameter {key!r} must be between {low} and {high}{zero}, got {value!r}")
