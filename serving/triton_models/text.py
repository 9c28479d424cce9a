"""The ``generate_text`` model: the one text-in/text-out entry (decoupled, streams text pieces).

Encodes with the version's tokenizer, streams ``generate`` of the same version through decoupled BLS
(request parameters passed on), and sends each new piece of text as soon as it decodes to whole
characters (a multi-byte character split over tokens waits for its last byte). A stream its client cancels
stops its ``generate`` stream in turn (asked at most every ``CANCEL_POLL_S``): Triton 2.51's python backend
cannot cancel a BLS request, so the stream is named (``STREAM_KEY``) and a control request with
``CANCEL_KEY`` stops it; ``generate`` then frees the slot as for its own clients.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from serving.triton_models.common import CANCEL_KEY, CANCEL_POLL_S, STREAM_KEY, ModelArgs, load_version_tokenizer

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
log = logging.getLogger(__name__)


def _bls_parameters(raw: str) -> dict[str, Any]:
    """Request parameters for BLS, which carries only bool/int/str: floats travel as their text."""
    return {k: repr(v) if isinstance(v, float) else v for k, v in json.loads(raw or "{}").items()}


class _CancelWatch:
    """One thread asks each open stream's sender, every ``CANCEL_POLL_S``, whether its client cancelled, and
    stops the ``generate`` stream of those that did. Not the stream threads themselves: they can lag far
    behind ``generate`` (each piece is a round trip to the server), and would notice only that late."""

    def __init__(self, cancel: Callable[[str], None]) -> None:
        self._cancel = cancel
        self._open: dict[str, tuple[Any, threading.Event]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lmforge-text-cancel", daemon=True)
        self._thread.start()

    def add(self, key: str, sender: Any) -> threading.Event:
        """Watch ``sender``; the event is set once its client cancelled."""
        flag = threading.Event()
        with self._lock:
            self._open[key] = (sender, flag)
        return flag

    def remove(self, key: str) -> None:
        with self._lock:
            self._open.pop(key, None)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(CANCEL_POLL_S):
            with self._lock:
                watched = list(self._open.items())
            for key, (sender, flag) in watched:
                if not flag.is_set() and sender.is_cancelled():
                    flag.set()
                    try:
                        self._cancel(key)
                    except Exception:  # the stream ended meanwhile, or the server is shutting down
                        log.warning("cancelling generate stream %s failed", key, exc_info=True)


def _send_error(sender: Any, message: str) -> None:
    try:
        sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(message)), flags=FINAL)
    except Exception:  # the client is gone (a cancelled stream takes no more responses): nothing to tell it
        return


class TextModel:
    def __init__(self, args: dict[str, Any]) -> None:
        self.args = ModelArgs.parse(args)
        self.tokenizer = load_version_tokenizer(self.args.directory)
        self.watch = _CancelWatch(self._cancel)

    def _generate(self, parameters: dict[str, Any], ids: np.ndarray) -> Any:
        """A decoupled BLS request to ``generate`` of this version."""
        return pb_utils.InferenceRequest(model_name="generate", model_version=self.args.version,
                                         inputs=[pb_utils.Tensor("input_ids", ids)],
                                         requested_output_names=["token_id"], parameters=parameters)

    def _cancel(self, key: str) -> None:
        """Stop ``generate``'s stream named ``key`` (a control request; its only response is the final flag)."""
        for _ in self._generate({CANCEL_KEY: key}, np.zeros(1, dtype=np.int64)).exec(decoupled=True):
            pass

    def _stream(self, request: Any, sender: Any) -> None:
        key = uuid.uuid4().hex
        cancelled = self.watch.add(key, sender)
        try:
            raw = pb_utils.get_input_tensor_by_name(request, "text_input").as_numpy().reshape(-1)[0]
            text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
            ids = np.array(self.tokenizer.encode(text), dtype=np.int64)
            parameters = _bls_parameters(request.parameters()) | {STREAM_KEY: key}
            tokens: list[int] = []
            sent = ""
            for response in self._generate(parameters, ids).exec(decoupled=True):
                if response.has_error():
                    raise ValueError(response.error().message())
                tensor = pb_utils.get_output_tensor_by_name(response, "token_id")
                if tensor is None or cancelled.is_set():  # once cancelled, generate's end is drained
                    continue
                tokens.extend(tensor.as_numpy().reshape(-1).tolist())
                decoded = self.tokenizer.decode(tokens)
                if decoded.endswith("\ufffd") or len(decoded) <= len(sent):
                    continue
                piece, sent = decoded[len(sent):], decoded
                sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("text_output", np.array([piece.encode()], dtype=np.object_))]))
            sender.send(flags=FINAL)
        except Exception as exc:  # every failure ends the stream with its reason
            _send_error(sender, f"generate_text: {exc}")
        finally:
            self.watch.remove(key)

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            threading.Thread(target=self._stream, args=(request, request.get_response_sender()), daemon=True).start()
        return None

    def finalize(self) -> None:
        self.watch.close()
