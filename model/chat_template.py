"""A model's chat template (Jinja, as in a Hugging Face ``tokenizer_config.json``), rendered the way
transformers' ``apply_chat_template(..., tokenize=False)`` renders it: a sandboxed environment with
``trim_blocks`` and ``lstrip_blocks``, loop controls, a ``tojson`` that does not escape HTML,
``raise_exception`` and ``strftime_now``; the tokenizer's special tokens (``bos_token``, ``eos_token``, ...)
are visible to the template.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from model.tokenizer import TokenizerRef


def chat_template_of(tokenizer: TokenizerRef | None) -> str | None:
    """The chat template recorded with a model version's tokenizer, or None (the house tokenizer has none)."""
    return tokenizer.chat_template if tokenizer is not None else None


def _raise(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@lru_cache(maxsize=8)
def _compiled(template: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)


def special_token_strings(tokenizer: TokenizerRef) -> dict[str, str]:
    """``bos_token``, ``eos_token`` and ``pad_token`` as the template sees them."""
    return {f"{name}_token": tokenizer.tokenizer.id_to_token(token_id) or ""
            for name, token_id in (("bos", tokenizer.bos_id), ("eos", tokenizer.eos_id), ("pad", tokenizer.pad_id))}


def render_chat(template: str, messages: list[dict[str, str]], *, add_generation_prompt: bool = True,
                special_tokens: dict[str, str] | None = None) -> str:
    """The conversation as the model's prompt text; ``add_generation_prompt`` opens the assistant's turn."""
    try:
        return _compiled(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                          **(special_tokens or {}))
    except jinja2.exceptions.TemplateError as exc:
        raise ValueError(f"the model's chat template failed to render: {exc}") from exc
