"""lm-evaluation-harness model ``lmforge``: any lm-eval task on a registered model version.

    lmforge lm-eval --model lmforge --model_args pretrained=production --tasks hellaswag [--apply_chat_template]

lm-eval 0.4.x finds models only in its own registry (no plugin entry points), so this module must be
imported before lm-eval resolves ``--model lmforge``: ``lmforge lm-eval`` does that, resolves the model
reference to the concrete version (``production`` -> ``lmforge:v3``, :func:`resolve_model_args`) and passes
every argument on to lm-eval's own command line; in Python, ``import model.lm_eval_adapter`` then
``lm_eval.simple_evaluate(model="lmforge", model_args={"pretrained": "lmforge:v3"})``.

The reference is ``pretrained``, as for lm-eval's own models: lm-eval names the run after it, and it merges
the model arguments into every task's metadata, where a ``version`` argument would replace each task's version.

Texts are encoded the way training saw documents: after an EOS separator, without BOS
(:meth:`model.registry.LoadedModel.prompt_ids`). Context that does not fit is cut from the left. With
``--apply_chat_template`` lm-eval renders each prompt with the version's chat template first.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import handle_stop_sequences
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from model.chat_template import chat_template_of, render_chat
from model.decoding import SamplingParams, generate
from model.registry import LoadedModel, load_model_version
from model.scoring import span_scores

logger = logging.getLogger(__name__)
DEFAULT_REF = "production"


def _int(value: Any, default: int) -> int:
    return default if value in (None, "", "auto") else int(value)


def _usable_device(device: str | None) -> str:
    """lm-eval's ``--device`` defaults to CUDA; like its own HF model, fall back to the CPU without one."""
    if not device or (device.startswith("cuda") and not torch.cuda.is_available()):
        if device:
            logger.warning("device %s is not available here; using the CPU", device)
        return "cpu"
    return device


def resolve_model_args(model_args: dict[str, Any]) -> dict[str, Any]:
    """The model arguments with the reference resolved to the concrete version (``pretrained=lmforge:v3``),
    so the run is named after it and records it. ``version`` (the older name) is taken as ``pretrained``."""
    from lmforge_core.metadata import repository as repo
    from lmforge_core.runtime import open_runtime
    from lmforge_core.settings import load_settings
    from model.registry import split_ref

    args = dict(model_args)
    ref = str(args.pop("version", None) or args.get("pretrained") or DEFAULT_REF)
    runtime = open_runtime(load_settings(config_file=args.get("config")))
    try:
        name, version_ref = split_ref(runtime.settings.model_name, ref)
        with runtime.metadata.session() as session:
            args["pretrained"] = repo.resolve_model_version(session, name, version_ref).label
    finally:
        runtime.metadata.dispose()
    return args


@register_model("lmforge")
class LmforgeLM(LM):
    """``model_args``: ``pretrained`` (a version: alias, number or ``name:vN``; default production),
    ``config`` (an lmforge.toml), ``batch_size``; lm-eval's ``--batch_size`` and ``--device`` are honoured."""

    def __init__(self, pretrained: str = DEFAULT_REF, config: str | None = None, batch_size: Any = 8,
                 device: str | None = None, loaded: LoadedModel | None = None, **extra: Any) -> None:
        super().__init__()
        if "version" in extra:
            raise ValueError("give the model version as pretrained=..., not version=...: lm-eval merges model "
                             "arguments into every task's metadata, where `version` replaces the task's version")
        if loaded is None:
            from lmforge_core.runtime import open_runtime
            from lmforge_core.settings import load_settings

            runtime = open_runtime(load_settings(config_file=config))
            try:
                loaded = load_model_version(runtime.metadata, runtime.artifacts, runtime.settings.model_name,
                                            str(pretrained), device=_usable_device(device),
                                            tokenizer_config=runtime.settings.data.tokenizer)
            finally:
                runtime.metadata.dispose()
        if loaded.tokenizer is None:
            raise ValueError(f"model {loaded.model_version} has no tokenizer; lm-eval tasks need text")
        self.loaded, self.batch_size = loaded, _int(batch_size, 8)
        self.context = loaded.config.context

    def get_model_info(self) -> dict[str, Any]:
        """Recorded by lm-eval in the results' ``config``: the concrete model version evaluated."""
        tok = self.loaded.tokenizer
        return {"model_version": self.loaded.model_version, "model_version_id": self.loaded.model_version_id,
                "tokenizer_version": tok.version if tok else None}

    # --- chat template ---------------------------------------------------------------------------------

    @property
    def tokenizer_name(self) -> str:
        """Fingerprints lm-eval's request cache for chat-templated prompts: the version's tokenizer."""
        assert self.loaded.tokenizer is not None
        return self.loaded.tokenizer.version

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        """The version's own template (lm-eval records it); a template name or text other than the
        model's is refused: the prompts must be those the model was tuned on."""
        if not chat_template:
            return None
        template = chat_template_of(self.loaded.tokenizer)
        if template is None:
            raise ValueError(f"model {self.loaded.model_version} has no chat template (its tokenizer records "
                             "none); run without --apply_chat_template")
        if isinstance(chat_template, str) and chat_template not in (template, "default"):
            raise ValueError(f"model {self.loaded.model_version} has one chat template, its own; "
                             "give --apply_chat_template without a name")
        return template

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        template = self.chat_template(True)
        assert template is not None and self.loaded.tokenizer is not None
        return render_chat(template, chat_history, self.loaded.tokenizer.special_tokens(),
                           add_generation_prompt=add_generation_prompt)

    # --- scoring -----------------------------------------------------------------------------------

    def _score(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """(sum log p(continuation | context), greedy?) per pair, in length-sorted batches."""
        rows = [self._fit(ctx, cont) for ctx, cont in pairs]
        starts = [len(row) - len(cont) for row, (_, cont) in zip(rows, pairs, strict=True)]
        return [(s.loglik, s.greedy) for s in span_scores(self.loaded.model, rows, starts, batch=self.batch_size)]

    def _fit(self, context: list[int], continuation: list[int]) -> list[int]:
        if not context:
            raise ValueError("a scored continuation needs at least one context token")
        if len(continuation) > self.context:
            raise ValueError(f"a continuation of {len(continuation)} tokens exceeds the context of {self.context}")
        row = context + continuation
        return row[-(self.context + 1):]

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """lm-eval's convention: trailing spaces of the context belong to the continuation, and the
        continuation's tokens are those of the joined text after the context's."""
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        tok = self.loaded.tokenizer
        ctx = tok.encode(context)
        whole = tok.encode(context + continuation)
        return [tok.eos_id, *whole[: len(ctx)]], whole[len(ctx):]

    # --- the three request types ----------------------------------------------------------------------

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        results = self._score([self._encode_pair(*req.args) for req in requests])
        for req, result in zip(requests, results, strict=True):
            self.cache_hook.add_partial("loglikelihood", req.args, result)
        return results

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        out = []
        tok = self.loaded.tokenizer
        for req in requests:
            windows = [make_disjoint_window(w) for w in get_rolling_token_windows(
                tok.encode(req.args[0]), prefix_token=tok.eos_id, max_seq_len=self.context, context_len=1)]
            total = sum(score for score, _ in self._score(windows))
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
            out.append(total)
        return out

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        out = []
        for req in requests:
            context, gen_kwargs = req.args
            text = self._generate_one(context, dict(gen_kwargs))
            self.cache_hook.add_partial("generate_until", req.args, text)
            out.append(text)
        return out

    def _generate_one(self, context: str, gen_kwargs: dict[str, Any]) -> str:
        tok = self.loaded.tokenizer
        until = handle_stop_sequences(gen_kwargs.pop("until", None), eos=tok.tokenizer.id_to_token(tok.eos_id))
        max_new = min(int(gen_kwargs.pop("max_gen_toks", 256)), self.context - 1)
        greedy = not gen_kwargs.get("do_sample", False) or float(gen_kwargs.get("temperature", 1.0)) == 0.0
        params = SamplingParams(
            max_new_tokens=max_new, temperature=0.0 if greedy else float(gen_kwargs.get("temperature", 1.0)),
            top_k=int(gen_kwargs.get("top_k", 0) or 0), top_p=float(gen_kwargs.get("top_p", 1.0) or 1.0),
            seed=gen_kwargs.get("seed"))
        prompt = self.loaded.prompt_ids(context)[-(self.context - max_new):]
        tokens = generate(self.loaded.model, [prompt], params, eos_id=tok.eos_id, pad_id=tok.pad_id)[0]
        text = tok.decode(tokens)
        cut = min((text.find(s) for s in until if s and s in text), default=len(text))
        return text[:cut]
