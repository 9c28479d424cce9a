"""Python client of the served model, on tritonclient: gRPC (sync and asyncio, token streaming from the
decoupled ``generate`` model) and HTTP (health, model control, the ``tokenizer`` model, and ``generate``
through Triton's ``generate_stream`` server-sent-events endpoint, since plain HTTP inference refuses a
model that sends more than one response).

Every call has a timeout; connecting and unavailability (server starting, model reloading) are retried
with exponential backoff; errors say which model, at which URL, failed and why (:class:`ServingError`).
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")
GENERATE, TEXT, TOKENIZER = "generate", "generate_text", "tokenizer"
_RETRYABLE = ("UNAVAILABLE", "failed to connect", "Connection refused", "Socket closed", "connection reset",
              "is not ready", "unable to find", "not found")  # the last two: a model mid-reload


class ServingError(RuntimeError):
    """A request to the Triton server failed; the message names the model, the URL and the cause."""


def unavailable(exc: BaseException) -> bool:
    """Whether a failure means the server or the requested model version is not there (down, starting,
    mid-reload, or the version was switched away), rather than a refused request."""
    message = str(exc).lower()
    return any(m.lower() in message for m in (*_RETRYABLE, "unknown model", "no available versions"))


@dataclass
class RetryPolicy:
    attempts: int = 4
    first_delay: float = 0.2
    factor: float = 2.0

    def run(self, what: str, call: Callable[[], T], retry_on: tuple[str, ...] = _RETRYABLE[:5]) -> T:
        delay = self.first_delay
        for attempt in range(1, self.attempts + 1):
            try:
                return call()
            except Exception as exc:
                message = str(exc)
                if attempt == self.attempts or not any(m.lower() in message.lower() for m in retry_on):
                    raise ServingError(f"{what}: {message.strip() or type(exc).__name__}") from exc
            time.sleep(delay)
            delay *= self.factor
        raise AssertionError("unreachable")


@dataclass
class Generation:
    tokens: list[int]
    finish_reason: str  # "stop" (end token) or "length" (max_tokens reached)
    ttft_s: float
    latency_s: float
    token_times: list[float] = field(default_factory=list)


def _finish_reason(count: int, params: dict[str, Any]) -> str:
    return "length" if count >= int(params.get("max_tokens", 64)) else "stop"


class LMClient:
    """``url`` is host:port of Triton's gRPC endpoint; ``http_url`` (optional) its HTTP endpoint."""

    def __init__(self, url: str, http_url: str | None = None, *, timeout: float = 60.0,
                 retry: RetryPolicy | None = None, model_version: str = "") -> None:
        import tritonclient.grpc as grpcclient

        self.url, self.http_url, self.timeout = url, http_url, timeout
        self.retry, self.model_version = retry or RetryPolicy(), model_version
        self._grpc = grpcclient
        self.client = grpcclient.InferenceServerClient(url)
        self._local = threading.local()  # one streaming client per thread (a client holds one stream)
        self._stream_clients: list[Any] = []

    def close(self) -> None:
        self.client.close()
        for client in self._stream_clients:
            client.close()

    def _stream_client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._grpc.InferenceServerClient(self.url)
            self._stream_clients.append(client)
        return client

    def ready(self, model: str = GENERATE) -> bool:
        try:
            return bool(self.client.is_model_ready(model, self.model_version, client_timeout=self.timeout))
        except Exception:  # unreachable server: not ready
            return False

    def _inputs(self, prompt: list[int]) -> list[Any]:
        tensor = self._grpc.InferInput("input_ids", [len(prompt)], "INT64")
        tensor.set_data_from_numpy(np.asarray(prompt, dtype=np.int64))
        return [tensor]

    def stream(self, prompt: list[int], **params: Any) -> Iterator[int]:
        """New tokens of ``generate`` as they are produced (gRPC bidirectional stream)."""
        events: queue.Queue[tuple[Any, Any]] = queue.Queue()
        client = self._stream_client()
        what = f"generate at {self.url}"
        try:
            self.retry.run(what, lambda: client.start_stream(callback=lambda result, error: events.put((result, error)),
                                                            stream_timeout=self.timeout))
            client.async_stream_infer(GENERATE, self._inputs(prompt), model_version=self.model_version,
                                      parameters=params, enable_empty_final_response=True)
            deadline = time.monotonic() + self.timeout
            while True:
                try:
                    result, error = events.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    raise ServingError(f"{what}: no response within {self.timeout:.0f}s") from None
                if error is not None:
                    raise ServingError(f"{what}: {error}")
                response = result.get_response()
                if response.outputs:
                    yield from result.as_numpy("token_id").reshape(-1).tolist()
                if response.parameters["triton_final_response"].bool_param:
                    return
        finally:
            client.stop_stream(cancel_requests=True)

    def generate(self, prompt: list[int], **params: Any) -> Generation:
        start = time.perf_counter()
        tokens, times = [], []
        for token in self.stream(prompt, **params):
            tokens.append(token)
            times.append(time.perf_counter() - start)
        total = time.perf_counter() - start
        return Generation(tokens, _finish_reason(len(tokens), params), times[0] if times else total, total, times)

    def stream_text(self, text: str, **params: Any) -> Iterator[str]:
        """Text pieces from the ``generate_text`` entry (text in, text out)."""
        events: queue.Queue[tuple[Any, Any]] = queue.Queue()
        client = self._stream_client()
        tensor = self._grpc.InferInput("text_input", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([text.encode()], dtype=np.object_))
        try:
            client.start_stream(callback=lambda result, error: events.put((result, error)), stream_timeout=self.timeout)
            client.async_stream_infer(TEXT, [tensor], model_version=self.model_version, parameters=params,
                                      enable_empty_final_response=True)
            while True:
                result, error = events.get(timeout=self.timeout)
                if error is not None:
                    raise ServingError(f"generate_text at {self.url}: {error}")
                response = result.get_response()
                if response.outputs:
                    yield result.as_numpy("text_output").reshape(-1)[0].decode()
                if response.parameters["triton_final_response"].bool_param:
                    return
        finally:
            client.stop_stream(cancel_requests=True)

    def tokenize(self, text: str) -> list[int]:
        tensor = self._grpc.InferInput("TEXT", [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[text.encode()]], dtype=np.object_))
        result = self.retry.run(f"tokenizer at {self.url}", lambda: self.client.infer(
            TOKENIZER, [tensor], model_version=self.model_version, client_timeout=self.timeout))
        return result.as_numpy("TOKEN_IDS").reshape(-1).tolist()

    def detokenize(self, ids: list[int]) -> str:
        tensor = self._grpc.InferInput("TOKEN_IDS", [1, len(ids)], "INT64")
        tensor.set_data_from_numpy(np.asarray([ids], dtype=np.int64))
        result = self.retry.run(f"tokenizer at {self.url}", lambda: self.client.infer(
            TOKENIZER, [tensor], model_version=self.model_version, client_timeout=self.timeout))
        return result.as_numpy("TEXT").reshape(-1)[0].decode()

    # --- HTTP ----------------------------------------------------------------------------------------

    def http_stream(self, prompt: list[int], **params: Any) -> Iterator[int]:
        """``generate`` over HTTP: Triton's generate_stream endpoint (server-sent events)."""
        import httpx

        if not self.http_url:
            raise ServingError("no HTTP URL given to the client")
        url = f"http://{self.http_url}/v2/models/{GENERATE}/generate_stream"
        if self.model_version:
            url = f"http://{self.http_url}/v2/models/{GENERATE}/versions/{self.model_version}/generate_stream"
        body = {"input_ids": list(prompt), **params}
        with httpx.stream("POST", url, json=body, timeout=self.timeout) as response:
            if response.status_code != 200:
                raise ServingError(f"generate at {url}: HTTP {response.status_code} {response.read().decode()[:300]}")
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                event = json.loads(line[5:])
                if "error" in event:
                    raise ServingError(f"generate at {url}: {event['error']}")
                if "token_id" in event:
                    value = event["token_id"]
                    yield from (value if isinstance(value, list) else [value])

    def http_tokenize(self, text: str) -> list[int]:
        import tritonclient.http as httpclient

        client = httpclient.InferenceServerClient(self.http_url, network_timeout=self.timeout)
        tensor = httpclient.InferInput("TEXT", [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[text.encode()]], dtype=np.object_))
        try:
            result = self.retry.run(f"tokenizer at {self.http_url}", lambda: client.infer(TOKENIZER, [tensor]))
        finally:
            client.close()
        return result.as_numpy("TOKEN_IDS").reshape(-1).tolist()


async def astream(url: str, prompt: list[int], timeout: float = 60.0, model_version: str = "",
                  **params: Any) -> AsyncIterator[int]:
    """asyncio twin of :meth:`LMClient.stream` (tritonclient.grpc.aio)."""
    import tritonclient.grpc.aio as aioclient

    client = aioclient.InferenceServerClient(url)
    tensor = aioclient.InferInput("input_ids", [len(prompt)], "INT64")
    tensor.set_data_from_numpy(np.asarray(prompt, dtype=np.int64))

    async def requests() -> AsyncIterator[dict[str, Any]]:
        yield {"model_name": GENERATE, "inputs": [tensor], "model_version": model_version, "parameters": params,
               "enable_empty_final_response": True}

    try:
        async for result, error in client.stream_infer(requests(), stream_timeout=timeout):
            if error is not None:
                raise ServingError(f"generate at {url}: {error}")
            response = result.get_response()
            if response.outputs:
                for token in result.as_numpy("token_id").reshape(-1).tolist():
                    yield token
            if response.parameters["triton_final_response"].bool_param:
                return
    finally:
        await client.close()
