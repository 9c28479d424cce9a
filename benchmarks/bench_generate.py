"""Decode throughput (greedy, KV cache) and perplexity-evaluation throughput: lmforge vs Hugging Face
``LlamaForCausalLM`` (the same weights, through our HF export) and CTranslate2 (converted from that export).

Work per case: prompts of 32 tokens, 128 new tokens, greedy, batch 1 and 8, for the ``tiny`` and
``125m`` shapes (random weights, seeded). EOS is never chosen on any engine (HF ``min_new_tokens``,
CTranslate2 ``min_length``, ours ``suppress_ids``), so every engine decodes exactly the same amount of work;
"same tokens" is the share of generated tokens equal to HF's.

lmforge paths: ``library`` (model.decoding.generate, every sampling option), ``static`` (the static-cache
decoder, eager), ``compiled`` (the same step under torch.compile) and ``ONNX RT`` (the serving stage's
ONNX export with KV cache in an onnxruntime session, greedy loop in numpy). CTranslate2 runs in the bench
environment (``.venv-bench``: numpy 2 there) as a worker process on the exported folder.

Perplexity evaluation: token-weighted loss of 8 windows x 256 tokens under no_grad, ours (chunked fused
loss) vs HF's forward with labels; both losses are printed (they must agree).

    .venv/bin/python benchmarks/bench_generate.py [--configs tiny 125m] [--batches 1 8] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPT, NEW = 32, 128


def _timed(fn: Callable[[], list[list[int]]], rounds: int) -> tuple[float, list[list[int]]]:
    """Best wall time of ``rounds`` runs after one warm-up (background load only ever slows a run)."""
    start = time.perf_counter()
    out = fn()
    _timed.first = time.perf_counter() - start  # type: ignore[attr-defined]
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def _export(name: str, folder: Path):
    """Random seeded weights of shape ``name``, saved ours and as a complete HF folder (with a tokenizer)."""
    import pydoc

    import torch

    from lmforge_core.config.data import TokenizerConfig
    from model.configs import get_config
    from model.hf_interop import export_hf
    from model.network import build_model
    from model.tokenizer import make_ref, train_bpe
    from model.weights import save_model

    cfg = get_config(name)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    tok_cfg = TokenizerConfig(vocab_size=min(cfg.vocab_size, 2048))
    text = pydoc.render_doc(json, renderer=pydoc.plaintext) + pydoc.render_doc(argparse, renderer=pydoc.plaintext)
    tokenizer = make_ref(train_bpe(text.split("\n\n"), tok_cfg), "bench", tok_cfg)
    save_model(model, folder / "ours")
    export_hf(folder / "ours", folder / "hf", tokenizer)
    return model, tokenizer


def _prompts(batch: int, vocab: int, low: int) -> list[list[int]]:
    """Seeded prompt ids in [low, vocab): below the tokenizer's size, since CTranslate2 takes token strings."""
    import torch

    gen = torch.Generator().manual_seed(batch)
    return torch.randint(low, vocab, (batch, PROMPT), generator=gen).tolist()


def _hf_generate(hf_model, prompts: list[list[int]], eos: int) -> Callable[[], list[list[int]]]:
    import torch

    ids = torch.tensor(prompts)

    def run() -> list[list[int]]:
        with torch.inference_mode():
            out = hf_model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW,
                                    min_new_tokens=NEW, do_sample=False, pad_token_id=eos)
        return out[:, PROMPT:].tolist()

    return run


def _ours(model, prompts: list[list[int]], eos: int, variant: str) -> Callable[[], list[list[int]]]:
    from model.decoding import SamplingParams, generate
    from model.fast_decode import StaticGreedyDecoder

    if variant == "library":
        # the library path cannot suppress EOS; with eos_id=None it never stops, so the work is the same.
        params = SamplingParams(max_new_tokens=NEW, temperature=0.0)
        return lambda: generate(model, prompts, params, eos_id=None, pad_id=0)
    decoder = StaticGreedyDecoder(model, len(prompts), PROMPT + NEW, compile_step=variant == "compiled")
    return lambda: decoder.generate(prompts, NEW, suppress_ids=[eos])


def _onnxruntime(model, prompts: list[list[int]], eos: int, folder: Path, threads: int) -> Callable[[], list[list[int]]]:
    """The serving export (onnxruntime session, past keys/values fed back each step): a greedy loop over it."""
    import numpy as np

    from serving.onnx_export import export_onnx
    from serving.onnx_files import ONNX_FILE, ort_session, ort_step

    export = export_onnx(model, folder / "onnx", prompts[0])
    session = ort_session(export.directory / ONNX_FILE, threads=threads)
    cfg = model.config
    ids = np.array(prompts, dtype=np.int64)
    rows = len(prompts)

    def run() -> list[list[int]]:
        past = [np.zeros((rows, cfg.kv_heads, 0, cfg.head_dim), dtype=np.float32) for _ in range(2 * cfg.n_layers)]
        logits, past = ort_step(session, ids, np.tile(np.arange(PROMPT), (rows, 1)), np.ones((rows, PROMPT)), past)
        out = []
        for step in range(NEW):
            last = logits[:, -1]
            last[:, eos] = -np.inf
            token = last.argmax(-1)
            out.append(token)
            if step == NEW - 1:
                break
            pos = np.full((rows, 1), PROMPT + step)
            logits, past = ort_step(session, token[:, None], pos, np.ones((rows, PROMPT + step + 1)), past)
        return np.stack(out, axis=1).tolist()

    return run


def _ct2(hf_dir: Path, prompts: list[list[int]], threads: int, rounds: int, python: Path) -> dict | None:
    if not python.is_file():
        print(f"  CTranslate2: {python} not found (make .venv-bench/.installed); skipped")
        return None
    with tempfile.NamedTemporaryFile("w+", suffix=".json") as spec:
        json.dump({"hf": str(hf_dir), "prompts": prompts, "threads": threads, "rounds": rounds}, spec)
        spec.flush()
        proc = subprocess.run([str(python), __file__, "--ct2-worker", spec.name], capture_output=True, text=True,
                              check=False)
    if proc.returncode != 0:
        print(f"  CTranslate2 failed: {proc.stderr.strip().splitlines()[-1:]}")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _ct2_worker(spec_path: str) -> None:
    """Runs in the bench environment: convert the HF folder, then time greedy generation."""
    import ctranslate2
    from ctranslate2.converters import TransformersConverter
    from transformers import AutoTokenizer

    spec = json.loads(Path(spec_path).read_text())
    out_dir = Path(spec["hf"]).parent / "ct2"
    TransformersConverter(spec["hf"]).convert(str(out_dir), force=True)
    tok = AutoTokenizer.from_pretrained(spec["hf"])
    gen = ctranslate2.Generator(str(out_dir), device="cpu", inter_threads=1, intra_threads=spec["threads"])
    start_tokens = [tok.convert_ids_to_tokens(p) for p in spec["prompts"]]

    def run() -> list[list[int]]:
        res = gen.generate_batch(start_tokens, max_length=NEW, min_length=NEW, sampling_topk=1,
                                 include_prompt_in_result=False)
        return [r.sequences_ids[0] for r in res]

    seconds, tokens = _timed(run, spec["rounds"])
    print(json.dumps({"seconds": seconds, "tokens": tokens}))


def _same(a: list[list[int]], b: list[list[int]]) -> float:
    pairs = [(x, y) for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=False)]
    return sum(x == y for x, y in pairs) / max(sum(len(r) for r in b), 1)


def bench_decode(name: str, batches: list[int], threads: int, rounds: int, ct2_python: Path) -> None:
    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model, tokenizer = _export(name, folder)
        hf_model = AutoModelForCausalLM.from_pretrained(folder / "hf").eval()
        eos = tokenizer.eos_id
        for batch in batches:
            prompts = _prompts(batch, tokenizer.vocab_size, low=3)
            total = batch * NEW
            hf_s, hf_tokens = _timed(_hf_generate(hf_model, prompts, eos), rounds)
            print(f"\n{name} batch {batch}: HF generate {total / hf_s:,.0f} tok/s")
            best_ours = float("inf")
            for variant in ("library", "static", "compiled"):
                seconds, tokens = _timed(_ours(model, prompts, eos, variant), rounds)
                print(f"  lmforge {variant:9s} {total / seconds:8,.0f} tok/s  {hf_s / seconds:5.2f}x HF  "
                      f"same tokens {_same(tokens, hf_tokens):.1%}" + (
                          f"  (first call, compiling: {_timed.first:.0f}s)"  # type: ignore[attr-defined]
                          if variant == "compiled" else ""))
                best_ours = min(best_ours, seconds)
            ort_s, ort_tokens = _timed(_onnxruntime(model, prompts, eos, folder, threads), rounds)
            print(f"  lmforge ONNX RT   {total / ort_s:8,.0f} tok/s  {hf_s / ort_s:5.2f}x HF  "
                  f"same tokens {_same(ort_tokens, hf_tokens):.1%}  (serving export, growing past, no IO binding)")
            ct2 = _ct2(folder / "hf", prompts, threads, rounds, ct2_python)
            if ct2:
                print(f"  CTranslate2       {total / ct2['seconds']:8,.0f} tok/s  {hf_s / ct2['seconds']:5.2f}x HF  "
                      f"same tokens {_same(ct2['tokens'], hf_tokens):.1%}")
                print(f"  best lmforge PyTorch path / CTranslate2 = {ct2['seconds'] / best_ours:.2f}x, "
                      f"ONNX RT / CTranslate2 = {ct2['seconds'] / ort_s:.2f}x")


def bench_perplexity(name: str, rounds: int) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory() as tmp:
        model, _ = _export(name, Path(tmp))
        hf_model = AutoModelForCausalLM.from_pretrained(Path(tmp) / "hf").eval()
        gen = torch.Generator().manual_seed(7)
        windows = torch.randint(3, model.config.vocab_size, (8, 257), generator=gen)
        inputs, targets = windows[:, :-1], windows[:, 1:]
        losses: dict[str, float] = {}

        def ours() -> list[list[int]]:
            with torch.no_grad():
                losses["ours"] = float(model(inputs, targets))
            return []

        def hf() -> list[list[int]]:
            with torch.no_grad():
                losses["hf"] = float(hf_model(windows, labels=windows).loss)
            return []

        tokens = targets.numel()
        ours_s, _ = _timed(ours, rounds)
        hf_s, _ = _timed(hf, rounds)
        print(f"\n{name} perplexity eval (8 x 256): lmforge {tokens / ours_s:,.0f} tok/s, HF forward "
              f"{tokens / hf_s:,.0f} tok/s, ratio {hf_s / ours_s:.2f}x; loss {losses['ours']:.5f} vs "
              f"{losses['hf']:.5f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["tiny", "125m"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--ct2-python", type=Path, default=ROOT / ".venv-bench" / "bin" / "python")
    parser.add_argument("--ct2-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ct2_worker:
        _ct2_worker(args.ct2_worker)
        return
    import torch

    torch.set_num_threads(args.threads)
    print(f"torch threads {args.threads}; prompt {PROMPT}, {NEW} new tokens, greedy; best of {args.rounds} rounds")
    for name in args.configs:
        bench_decode(name, args.batches, args.threads, args.rounds, args.ct2_python)
        bench_perplexity(name, args.rounds)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
