"""A tiny trained-tokenizer + random-weights model shared by the serving tests (exported once per session)."""

from __future__ import annotations

import pydoc
import re
import textwrap
import urllib.request
from pathlib import Path

import torch

from lmforge_core.config.data import TokenizerConfig
from model.configs import ModelConfig
from model.network import Transformer, build_model
from model.tokenizer import TokenizerRef, make_ref, train_bpe

TOKENIZER_CONFIG = TokenizerConfig(vocab_size=320, min_frequency=2)
PROJECT_SOURCE = str(Path(__file__).resolve().parents[2])  # the checkout the python stubs import
_SAMPLE = re.compile(r'^(lmforge_generate_\w+)\{([^}]*)\} (\S+)$')


def corpus() -> list[str]:
    """Real English text already on the machine: the documentation of a few standard-library modules."""
    import collections
    import json
    import textwrap as tw

    text = "\n".join(pydoc.render_doc(mod, renderer=pydoc.plaintext) for mod in (json, tw, collections))
    return [p for p in textwrap.dedent(text).split("\n\n") if p.strip()]


def tiny_tokenizer() -> TokenizerRef:
    return make_ref(train_bpe(corpus(), TOKENIZER_CONFIG), "tok-test", TOKENIZER_CONFIG)


def tiny_model(vocab_size: int, seed: int = 0, context: int = 64) -> Transformer:
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=vocab_size, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=128,
                      context=context, init_std=0.08)
    return build_model(cfg).eval()


def greedy_reference(model: Transformer, prompt: list[int], max_tokens: int, eos_id: int | None) -> list[int]:
    """Greedy new tokens of the training network itself, recomputed from scratch each step (no KV cache);
    the end token is not included (the decoding library's convention)."""
    ids = list(prompt)
    out: list[int] = []
    with torch.no_grad():
        for _ in range(max_tokens):
            nxt = int(model(torch.tensor([ids]))[0, -1].argmax())
            if nxt == eos_id:
                break
            out.append(nxt)
            ids.append(nxt)
    return out


def generate_metrics(metrics_port: int, version: int = 1) -> dict[str, float]:
    """The generate model's own metrics (``lmforge_generate_*``) of one version, from Triton's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
        body = response.read().decode()
    found = {}
    for line in body.splitlines():
        match = _SAMPLE.match(line)
        if match and f'version="{version}"' in match.group(2):
            found[match.group(1)] = float(match.group(3))
    return found
