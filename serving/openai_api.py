"""An OpenAI-compatible ``/v1/completions`` and ``/v1/chat/completions`` endpoint in front of Triton.

Any OpenAI client (the ``openai`` package, curl, LangChain...) can use the served model: the endpoint
encodes with the tokenizer of the version Triton serves (read from the repository's config, so a
rollback is followed), streams ``generate`` of exactly that version over asyncio gRPC, and answers in
OpenAI's JSON, or as server-sent events with ``stream: true`` (ending with ``data: [DONE]``).

Chat messages are joined as ``"<role>: <content>\\n"`` lines followed by ``"assistant:"``: the model is a
plain language model with no chat template of its own.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field, field_validator

from model.tokenizer import TokenizerRef
from serving.client import ServingError, astream
from serving.triton_config import TOKENIZER, validate_config
from serving.triton_models.common import load_version_tokenizer


class _SamplingRequest(BaseModel):
    """The request fields both endpoints share: which model, how many tokens, how to sample."""

    model: str = ""
    max_tokens: int = Field(16, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=5.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0)
    seed: int | None = Field(None, ge=0)
    stream: bool = False
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=1, description="one choice per request")


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
        return value


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(_SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)


def chat_prompt(messages: list[ChatMessage]) -> str:
    return "".join(f"{m.role}: {m.content}\n" for m in messages) + "assistant:"


@dataclass
class Backend:
    """The Triton server and repository behind the endpoint; the tokenizer follows the served version."""

    grpc_url: str
    repository: Path
    model_name: str
    timeout: float = 60.0
    _cache: tuple[float, int, TokenizerRef] | None = None

    def served(self) -> tuple[int, TokenizerRef]:
        config_path = self.repository / TOKENIZER / "config.pbtxt"
        mtime = config_path.stat().st_mtime
        if self._cache is None or self._cache[0] != mtime:
            versions = list(validate_config(config_path.read_text(), str(config_path)).version_policy.specific.versions)
            version = max(versions)
            self._cache = (mtime, version, load_version_tokenizer(self.repository / TOKENIZER / str(version)))
        return self._cache[1], self._cache[2]


def _stops(stop: str | list[str] | None) -> list[str]:
    return [stop] if isinstance(stop, str) else list(stop or [])


async def _pieces(backend: Backend, prompt: str, req: CompletionRequest | ChatRequest,
                  usage: dict[str, int]) -> AsyncIterator[tuple[str, str | None]]:
    """(text piece, finish_reason or None) as the tokens arrive; stop strings end the stream early."""
    version, tokenizer = backend.served()
    ids = tokenizer.encode(prompt)
    usage["prompt_tokens"] = len(ids)
    params: dict[str, Any] = {"max_tokens": req.max_tokens, "temperature": float(req.temperature),
                              "top_p": float(req.top_p), "top_k": req.top_k}
    if req.seed is not None:
        params["seed"] = req.seed
    tokens: list[int] = []
    sent, stops = "", _stops(req.stop)
    async for token in astream(backend.grpc_url, ids, timeout=backend.timeout, model_version=str(version), **params):
        tokens.append(token)
        text = tokenizer.decode(tokens)
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


def _error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"message": message, "type": kind, "param": None,
                                                               "code": None}})


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


async def _respond(backend: Backend, prompt: str, req: CompletionRequest | ChatRequest, chat: bool):  # type: ignore[no-untyped-def]
    kind = "chat.completion" if chat else "text_completion"
    model = req.model or backend.model_name
    usage: dict[str, int] = {}
    if not req.stream:
        parts, finish = [], None
        async for piece, reason in _pieces(backend, prompt, req, usage):
            parts.append(piece)
            finish = reason or finish
        return _envelope(kind, model) | {"choices": [_choice(chat, "".join(parts), finish, False)], "usage": _usage(usage)}

    async def events() -> AsyncIterator[str]:
        head = _envelope(f"{kind}.chunk" if chat else kind, model)
        try:
            async for piece, reason in _pieces(backend, prompt, req, usage):
                yield f"data: {json.dumps(head | {'choices': [_choice(chat, piece, reason, True)]})}\n\n"
        except ServingError as exc:
            yield f"data: {json.dumps({'error': {'message': str(exc), 'type': 'server_error'}})}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


def create_app(backend: Backend) -> FastAPI:
    app = FastAPI(title="lmforge OpenAI-compatible API")

    @app.exception_handler(ServingError)
    async def _serving_error(_: Request, exc: ServingError) -> JSONResponse:
        message = str(exc)
        status = 400 if ("exceeds" in message or "prompt" in message or "parameter" in message) else 502
        return _error(status, message, "invalid_request_error" if status == 400 else "server_error")

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in exc.errors())
        return _error(400, f"invalid request: {problems}")

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        version, _ = backend.served()
        return {"object": "list", "data": [{"id": backend.model_name, "object": "model", "owned_by": "lmforge",
                                            "created": 0, "version": version}]}

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest):  # type: ignore[no-untyped-def]
        return await _respond(backend, str(req.prompt), req, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatRequest):  # type: ignore[no-untyped-def]
        return await _respond(backend, chat_prompt(req.messages), req, chat=True)

    return app
