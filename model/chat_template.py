"""A model's chat template rendered as transformers' ``apply_chat_template(messages, add_generation_prompt=True,
tokenize=False)`` renders it: the same sandboxed Jinja environment (``ImmutableSandboxedEnvironment`` with
``trim_blocks``, ``lstrip_blocks`` and loop controls), the same ``tojson`` filter and ``raise_exception`` /
``strftime_now`` globals, and the tokenizer's special tokens as template variables.

Chat templates come with downloaded checkpoints and are untrusted code: the sandbox refuses attribute access to
Python internals, and the rendered text is only ever tokenized. A model without a template keeps the plain
``"<role>: <content>"`` lines of :func:`plain_prompt`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from jinja2 import Template, TemplateError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from model.tokenizer import TokenizerRef


class ChatTemplateError(ValueError):
    """The template refused the conversation (``raise_exception``) or could not be compiled or rendered."""


def chat_template_of(tokenizer: TokenizerRef | None) -> str | None:
    """The chat template recorded with a model version's tokenizer, or None (the house tokenizer has none)."""
    return tokenizer.chat_template if tokenizer is not None else None


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    # Jinja's own filter escapes HTML characters; transformers replaces it with plain json.dumps
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


@lru_cache(maxsize=16)
def compile_template(source: str) -> Template:
    """The compiled template (cached: one model serves one template)."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(source)
    except TemplateError as exc:
        raise ChatTemplateError(f"the model's chat template does not compile: {exc}") from exc


def render_chat(template: str, messages: Sequence[Mapping[str, str]], special_tokens: Mapping[str, str | None],
                *, add_generation_prompt: bool = True) -> str:
    """The prompt text of ``messages`` (``{"role", "content"}`` mappings); ``special_tokens`` maps
    ``bos_token``/``eos_token``/``pad_token`` to their text, as transformers passes its special-tokens map."""
    plain = [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]
    tokens = {name: str(text) for name, text in special_tokens.items() if text is not None}
    try:
        return compile_template(template).render(messages=plain, tools=None, documents=None,
                                                 add_generation_prompt=add_generation_prompt, **tokens)
    except TemplateError as exc:
        raise ChatTemplateError(f"the model's chat template refused the conversation: {exc}") from exc


def plain_prompt(messages: Sequence[Mapping[str, str]]) -> str:
    """A model without a chat template: one ``"<role>: <content>"`` line per message, then ``"assistant:"``."""
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
