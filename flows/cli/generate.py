"""``lmforge generate-local``: a continuation from a registered model version, decoded in this process."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Annotated, Any

import typer

from flows.cli.common import CliError, console, emit, runtime

if TYPE_CHECKING:
    from model.decoding import SamplingParams
    from model.registry import LoadedModel


def single_token_stops(loaded: LoadedModel, stops: list[str]) -> tuple[int, ...]:
    """Stop strings that are one token (``<|eos|>``, a newline...) also stop the decoder itself."""
    ids = set()
    for text in stops:
        special = loaded.tokenizer.tokenizer.token_to_id(text)
        encoded = [special] if special is not None else loaded.tokenizer.encode(text)
        if len(encoded) == 1:
            ids.add(encoded[0])
    return tuple(sorted(ids))


class Continuation:
    """Tokens decoded so far and their text, cut at the first stop string."""

    def __init__(self, loaded: LoadedModel, stops: list[str], max_tokens: int) -> None:
        self.loaded, self.stops, self.max_tokens = loaded, [s for s in stops if s], max_tokens
        self.tokens: list[int] = []
        self.text, self.finish_reason = "", "length"

    def _add(self, token: int) -> str:
        self.tokens.append(token)
        text = self.loaded.tokenizer.decode(self.tokens)
        cut = min((text.find(s) for s in self.stops if s in text), default=-1)
        if cut >= 0:
            text, self.finish_reason = text[:cut], "stop"
        elif text.endswith("\ufffd"):  # an incomplete UTF-8 character: wait for its next byte
            return ""
        delta, self.text = text[len(self.text):], text
        return delta

    def consume(self, steps: Iterable[list[int | None]]) -> Iterator[str]:
        """Text deltas of the decoder's steps (one row), until a stop token, a stop string or the end."""
        for step in steps:
            if step[0] is None:
                self.finish_reason = "stop"
                return
            delta = self._add(step[0])
            if delta:
                yield delta
            if self.finish_reason == "stop":
                return
        if len(self.tokens) < self.max_tokens:
            self.finish_reason = "stop"


def decode_steps(loaded: LoadedModel, prompt: str, params: SamplingParams) -> Iterator[list[int | None]]:
    """One row's decoder steps; beam search runs whole and is replayed as steps."""
    from model.decoding import generate, stream_generate

    ids, kw = loaded.prompt_ids(prompt), {"eos_id": loaded.eos_id, "pad_id": loaded.pad_id}
    if params.num_beams > 1:
        return iter([[t] for t in generate(loaded.model, [ids], params, **kw)[0]])
    return stream_generate(loaded.model, [ids], params, **kw)


def _load(ref: str) -> LoadedModel:
    from lmforge_core.metadata.repository import NotFoundError
    from model.registry import load_model_version
    from model.weights import WeightsError

    rt = runtime()
    try:
        loaded = load_model_version(rt.metadata, rt.artifacts, rt.settings.model_name, ref,
                                    tokenizer_config=rt.settings.data.tokenizer)
    except (NotFoundError, WeightsError, ValueError) as exc:
        raise CliError(str(exc), "list the versions with `lmforge status`") from exc
    if loaded.tokenizer is None:
        raise CliError(f"model {loaded.model_version} has no tokenizer recorded (its dataset has none)",
                       "train on a dataset built by `lmforge ingest`")
    return loaded


def _render(c: Any, d: dict[str, Any]) -> None:
    from rich.markup import escape

    c.print(f"[bold]{escape(d['prompt'])}[/]{escape(d['text'])}", highlight=False)
    c.print(f"[dim]{d['model_version']}: {d['num_tokens']} tokens, finished by {d['finish_reason']}[/]")


def register(app: typer.Typer) -> None:
    @app.command("generate-local")
    def generate_local(
        model_version: Annotated[str, typer.Argument(help="production, candidate, 3, v3 or lmforge:v3")],
        prompt: Annotated[str, typer.Argument(help="text to continue")],
        max_tokens: Annotated[int, typer.Option("--max-tokens", help="new tokens at most")] = 64,
        temperature: Annotated[float, typer.Option(help="0 = greedy")] = 1.0,
        top_k: Annotated[int, typer.Option("--top-k", help="0 = off")] = 0,
        top_p: Annotated[float, typer.Option("--top-p")] = 1.0,
        min_p: Annotated[float, typer.Option("--min-p")] = 0.0,
        repetition_penalty: Annotated[float, typer.Option("--repetition-penalty")] = 1.0,
        adaptive_temperature: Annotated[bool, typer.Option(
            "--adaptive-temperature", help="entropy-adaptive temperature around --temperature")] = False,
        num_beams: Annotated[int, typer.Option("--num-beams", help="> 1: beam search")] = 1,
        length_penalty: Annotated[float, typer.Option("--length-penalty")] = 1.0,
        seed: Annotated[int | None, typer.Option(help="seed for reproducible sampling")] = None,
        stop: Annotated[list[str] | None, typer.Option("--stop", help="stop string (repeatable)")] = None,
        stream: Annotated[bool, typer.Option("--stream", help="print tokens as they are decoded")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    ) -> None:
        """Continue PROMPT with a registered model version, decoded locally (no server)."""
        from model.decoding import SamplingParams

        stops = list(stop or [])
        loaded = _load(model_version)
        params = SamplingParams(
            max_new_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
            repetition_penalty=repetition_penalty, adaptive_temperature=adaptive_temperature,
            num_beams=num_beams, length_penalty=length_penalty, seed=seed,
            stop_token_ids=single_token_stops(loaded, stops))
        if stream and num_beams > 1:
            raise CliError("--stream cannot show beam search (--num-beams > 1)", "drop one of the two options")
        state = Continuation(loaded, stops, max_tokens)
        try:
            params.validate()
            _print_stream(state, decode_steps(loaded, prompt, params), prompt, stream, as_json)
        except ValueError as exc:
            raise CliError(str(exc), "see `lmforge generate-local --help` for the valid ranges") from exc
        result = {"model_version": loaded.model_version, "prompt": prompt, "text": state.text,
                  "tokens": state.tokens, "num_tokens": len(state.tokens), "finish_reason": state.finish_reason,
                  "params": {k: v for k, v in params.__dict__.items() if k != "stop_token_ids"} | {"stop": stops}}
        if stream and not as_json:
            console.print(f"\n[dim]{result['num_tokens']} tokens, finished by {result['finish_reason']}[/]")
        else:
            emit(result, as_json, _render)


def _print_stream(state: Continuation, steps: Iterator[list[int | None]], prompt: str, stream: bool,
                  as_json: bool) -> None:
    """Run the decoder; with ``stream`` print each delta (JSON lines ``{"delta": ...}`` with ``--json``)."""
    if stream and not as_json:
        console.print(prompt, end="", markup=False, highlight=False)
    for delta in state.consume(steps):
        if stream and as_json:
            print(json.dumps({"delta": delta}), flush=True)
        elif stream:
            console.print(delta, end="", markup=False, highlight=False, soft_wrap=True)
