"""An OpenAI-compatible ``/v1/completions`` and ``/v1/chat/completions`` endpoint in front of Triton.

Any OpenAI client (the ``openai`` package, curl, LangChain...) can use the served model: the endpoint
encodes with the tokenizer of the version Triton reports ready (:mod:`serving.served_version`: a publish
or rollback is followed once the server has loaded the version, never before), streams ``generate`` of
exactly that version over asyncio gRPC, and answers in OpenAI's JSON, or as server-sent events with
``stream: true`` (ending with ``data: [DONE]``). A request that finds its version switched away before its
first token is sent again to the version now served.

Every failure is an OpenAI error object: 400 for a bad request (checked against the served version's
context and limits before anything is sent, so a stream never starts only to fail), 404 for an unknown
model, 413 for a body over ``Backend.max_body_bytes``, 503 while Triton is down or reloading; an error
after a stream started is its last event, followed by ``data: [DONE]``. Tokenizing runs off the event
loop, so one huge prompt does not stall the other clients.

Chat messages are joined as ``"<role>: <content>\\n"`` lines followed by ``"assistant:"``: the model is a
plain language model with no chat template of its own.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field, field_validator
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.batching import INT64_MAX, SAFE_RANGES, RequestError, check_range
from serving.client import ServingError, astream, unavailable
from serving.served_version import BackendUnavailable, ServedVersion, ServedVersions

MAX_BODY_BYTES = 1 << 20  # a request body above this is refused (413) before it is parsed
SWITCH_ATTEMPTS = 4  # sends of one request whose version was switched away before its first token
MAX_STOPS = 4  # as OpenAI's API


def _utf8(value: str, what: str) -> str:
    """``value`` unless it cannot be encoded as UTF-8 (a lone surrogate such as ``\\ud800``)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{what} is not valid Unicode text (a lone surrogate at position {exc.start})") from None
    return value


class _SamplingRequest(BaseModel):
    """The request fields both endpoints share: which model, how many tokens, how to sample."""

    model: str = ""
    max_tokens: int = Field(16, ge=1, le=INT64_MAX)
    temperature: float = Field(1.0, ge=0.0, le=SAFE_RANGES["temperature"][1])
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0, le=INT64_MAX)
    seed: int | None = Field(None, ge=0, le=INT64_MAX)
    stream: bool = False
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=1, description="one choice per request")

    @field_validator("temperature")
    @classmethod
    def _safe_temperature(cls, value: float) -> float:
        try:
            check_range("temperature", value)
        except RequestError as exc:
            raise ValueError(str(exc).replace("request parameter 'temperature' ", "")) from None
        return value

    @field_validator("model")
    @classmethod
    def _model_text(cls, value: str) -> str:
        return _utf8(value, "model")

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> list[str]:
        stops = [value] if isinstance(value, str) else list(value or [])
        if len(stops) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop sequences, got {len(stops)}")
        if any(not s for s in stops):
            raise ValueError("a stop sequence is empty: give non-empty strings, or leave stop out")
        return [_utf8(s, "stop") for s in stops]


class CompletionRequest(_SamplingRequest):
    prompt: str | list[str]

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str:
        if isinstance(value, list):
            if len(value) != 1:
                raise ValueError("send exactly one prompt per request")
            value = value[0]
        if not value:
            raise ValueError("the prompt is empty")
        return _utf8(value, "the prompt")


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str

    @field_validator("content")
    @classmethod
    def _text(cls, value: str) -> str:
        return _utf8(value, "the message content")


class ChatRequest(_SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)


def chat_prompt(messages: list[ChatMessage]) -> str:
    return "".join(f"{m.role}: {m.content}\n" for m in messages) + "assistant:"


class ApiError(Exception):
    """A request the endpoint answers with an OpenAI error object."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.code, self.param = status, kind, code, param

    def body(self) -> dict[str, Any]:
        return {"error": {"message": str(self), "type": self.kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(status_code=self.status, content=self.body())


def api_error(exc: BaseException) -> ApiError:
    """Any failure as the OpenAI error to answer with: 503 while Triton or the version is unavailable, 400
    for a request the model refused, 502 for another failure of the backend, 500 for a bug of ours."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, BackendUnavailable) or (isinstance(exc, ServingError) and unavailable(exc)):
        return ApiError(503, f"the model server is unavailable, retry later: {exc}", "server_error",
                        "backend_unavailable")
    if isinstance(exc, ServingError):
        message = str(exc)
        if "exceeds" in message or "prompt" in message or "parameter" in message:
            return ApiError(400, message)
        return ApiError(502, message, "server_error")
    return ApiError(500, f"internal error ({type(exc).__name__}): {exc}", "server_error")


@dataclass
class Backend:
    """The Triton server and repository behind the endpoint; the tokenizer follows the served version."""

    grpc_url: str
    repository: Path
    model_name: str
    timeout: float = 60.0
    max_body_bytes: int = MAX_BODY_BYTES
    versions: ServedVersions = field(init=False)

    def __post_init__(self) -> None:
        self.versions = ServedVersions(self.grpc_url, Path(self.repository))

    async def served(self) -> ServedVersion:
        return await self.versions.current()


def _check_fits(served: ServedVersion, ids: list[int], req: CompletionRequest | ChatRequest) -> None:
    """What the generate model would refuse, refused here first (so a stream never starts only to fail)."""
    if len(ids) >= served.context:
        raise ApiError(400, f"the prompt has {len(ids)} tokens; the model's context is {served.context}, so at most "
                            f"{served.context - 1} fit", param="prompt", code="context_length_exceeded")
    if req.max_tokens > served.max_tokens_limit:
        raise ApiError(400, f"max_tokens {req.max_tokens} exceeds this server's limit {served.max_tokens_limit}",
                       param="max_tokens")


def _params(req: CompletionRequest | ChatRequest) -> dict[str, Any]:
    params: dict[str, Any] = {"max_tokens": req.max_tokens, "temperature": float(req.temperature),
                              "top_p": float(req.top_p), "top_k": req.top_k}
    if req.seed is not None:
        params["seed"] = req.seed
    return params


async def _pieces(backend: Backend, served: ServedVersion, ids: list[int], req: CompletionRequest | ChatRequest,
                  usage: dict[str, int]) -> AsyncIterator[tuple[str, str | None]]:
    """(text piece, finish_reason or None) as the tokens arrive; stop strings end the stream early."""
    usage["prompt_tokens"] = len(ids)
    tokens: list[int] = []
    sent, stops = "", list(req.stop or [])
    async for token in astream(backend.grpc_url, ids, timeout=backend.timeout, model_version=str(served.version),
                               **_params(req)):
        tokens.append(token)
        text = served.tokenizer.decode(tokens)
        if text.endswith("\ufffd"):
            continue
        cut = min((text.find(s) for s in stops if s in text), default=-1)
        if cut >= 0:
            usage["completion_tokens"] = len(tokens)
            yield text[len(sent):cut], "stop"
            return
        if len(text) > len(sent):
            yield text[len(sent):], None
            sent = text
    usage["completion_tokens"] = len(tokens)
    yield "", "length" if len(tokens) >= req.max_tokens else "stop"


Pieces = AsyncIterator[tuple[str, str | None]]


async def _start(backend: Backend, prompt: str, req: CompletionRequest | ChatRequest,
                 usage: dict[str, int]) -> tuple[tuple[str, str | None], Pieces]:
    """The first piece and the rest. A version switched away between choosing it and sending to it is
    chosen again (its tokenizer too): no token has been sent yet, so nothing is repeated."""
    for attempt in range(1, SWITCH_ATTEMPTS + 1):
        served = await backend.served()
        ids = await asyncio.to_thread(served.tokenizer.encode, prompt)  # a long prompt must not stall the loop
        _check_fits(served, ids, req)
        pieces = _pieces(backend, served, ids, req, usage)
        try:
            return await anext(pieces), pieces
        except ServingError as exc:
            if attempt == SWITCH_ATTEMPTS or not unavailable(exc):
                raise
            await asyncio.sleep(0.05 * attempt)
    raise AssertionError("unreachable")


def _envelope(kind: str, model: str) -> dict[str, Any]:
    return {"id": f"{'chatcmpl' if 'chat' in kind else 'cmpl'}-{uuid.uuid4().hex[:24]}", "object": kind,
            "created": int(time.time()), "model": model}


def _choice(chat: bool, text: str, finish: str | None, stream: bool) -> dict[str, Any]:
    if not chat:
        return {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
    body = {"role": "assistant", "content": text}
    return {"index": 0, ("delta" if stream else "message"): body, "finish_reason": finish}


def _usage(counts: dict[str, int]) -> dict[str, int]:
    prompt, completion = counts.get("prompt_tokens", 0), counts.get("completion_tokens", 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _check_model(backend: Backend, req: CompletionRequest | ChatRequest) -> str:
    if req.model and req.model != backend.model_name:
        raise ApiError(404, f"the model {req.model!r} does not exist; this server serves {backend.model_name!r}",
                       param="model", code="model_not_found")
    return backend.model_name


async def _respond(backend: Backend, prompt: str, req: CompletionRequest | ChatRequest, chat: bool):  # type: ignore[no-untyped-def]
    kind = "chat.completion" if chat else "text_completion"
    model = _check_model(backend, req)
    usage: dict[str, int] = {}
    first, rest = await _start(backend, prompt, req, usage)  # failures so far answer with an error status
    if not req.stream:
        parts, finish = [first[0]], first[1]
        async for piece, reason in rest:
            parts.append(piece)
            finish = reason or finish
        return _envelope(kind, model) | {"choices": [_choice(chat, "".join(parts), finish, False)], "usage": _usage(usage)}

    async def events() -> AsyncIterator[str]:
        head = _envelope(f"{kind}.chunk" if chat else kind, model)
        yield f"data: {json.dumps(head | {'choices': [_choice(chat, first[0], first[1], True)]})}\n\n"
        try:
            async for piece, reason in rest:
                yield f"data: {json.dumps(head | {'choices': [_choice(chat, piece, reason, True)]})}\n\n"
        except Exception as exc:  # the stream has started: the error is its last event
            yield f"data: {json.dumps(api_error(exc).body())}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes (413), declared or streamed, before the app parses them."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length", b"0")
        body = b"" if declared.isdigit() and int(declared) <= self.limit else None
        more = body is not None
        while more:
            message = await receive()
            body = (body or b"") + message.get("body", b"")
            more = message.get("more_body", False) and len(body) <= self.limit
            if len(body) > self.limit:
                body = None
        if body is None:
            error = ApiError(413, f"the request body is larger than this server's limit of {self.limit} bytes",
                             code="request_too_large")
            await error.response()(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The buffered body as one message, then the connection's own messages (a streaming response waits
    on them for the client's disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    @app.exception_handler(ServingError)
    async def _failed(_: Request, exc: Exception) -> JSONResponse:
        return api_error(exc).response()

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        return ApiError(exc.status_code, str(exc.detail)).response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in exc.errors())
        return ApiError(400, f"invalid request: {problems}").response()

    @app.exception_handler(Exception)
    async def _bug(_: Request, exc: Exception) -> JSONResponse:
        return api_error(exc).response()


def create_app(backend: Backend) -> FastAPI:
    app = FastAPI(title="lmforge OpenAI-compatible API")
    _install_error_handlers(app)
    app.add_middleware(BodyLimit, limit=backend.max_body_bytes)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        served = await backend.served()
        return {"object": "list", "data": [{"id": backend.model_name, "object": "model", "owned_by": "lmforge",
                                            "created": 0, "version": served.version}]}

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest):  # type: ignore[no-untyped-def]
        return await _respond(backend, str(req.prompt), req, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatRequest):  # type: ignore[no-untyped-def]
        return await _respond(backend, chat_prompt(req.messages), req, chat=True)

    return app
