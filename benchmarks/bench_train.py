"""Training throughput on CPU: lmforge's DeepSpeed engine vs Hugging Face LlamaForCausalLM.

Same shape, batch, sequence length, AdamW hyper-parameters, gradient clipping and fp32, in the same run.
Each variant lives in its own worker process (so its peak memory is its own); after warm-up the workers
run their timed rounds in turn, round-robin, so every variant meets the same background load (the
machine is shared). Reported: best round (interference only ever slows a round) and the median of the
per-round ratios. Peak memory is the growth of the worker's resident set over its post-import baseline.
MFU counts every matmul (projections, attention scores and values, output head) against this machine's
measured fp32 matmul peak (torch.mm 2048, best of 5).

``ours-fused-off`` is our engine with ``fused_ops="off"`` (the plain autograd RMSNorm, SwiGLU and rotary
ops instead of the hand-written CPU backward passes): its ratio to ``ours`` is the gain of those passes alone.

On a CUDA GPU (``--device cuda``, the default where one is present) both run in bf16 mixed precision
(ours: DeepSpeed's bf16 mode; HF: fp32 weights under ``torch.autocast``), MFU is against the GPU's
nominal dense bf16 peak (`model.metrics.NOMINAL_GPU_PEAKS`) and peak memory is the CUDA allocator's.

    .venv/bin/python benchmarks/bench_train.py [--configs tiny 20m] [--rounds 5] [--steps 3]
        [--variants hf ours ours-fused-off]
    .venv/bin/python benchmarks/bench_train.py --device cuda --configs 125m 1b --batch 8 --seq 2048
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

BETAS, LR, WD, CLIP = (0.9, 0.95), 3e-4, 0.1, 1.0


def _rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _build(variant: str, name: str, batch: int, seq: int, dev: str) -> tuple[Callable, float, object]:
    import contextlib

    import torch

    from model.configs import get_config

    cfg = get_config(name, context=seq)
    torch.manual_seed(0)
    on_gpu = dev == "cuda"
    if variant == "hf":
        import transformers

        hf_cfg = transformers.LlamaConfig(
            vocab_size=cfg.vocab_size, hidden_size=cfg.dim, intermediate_size=cfg.hidden,
            num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.kv_heads,
            max_position_embeddings=cfg.context, rms_norm_eps=cfg.norm_eps, tie_word_embeddings=False,
            attn_implementation="sdpa")
        base = _rss_mib()
        model = transformers.LlamaForCausalLM(hf_cfg).to(dev).train()
        opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, weight_decay=WD, fused=on_gpu or None)
        autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if on_gpu else contextlib.nullcontext

        def step(w: torch.Tensor) -> float:
            with autocast():
                loss = model(input_ids=w[:, :-1], labels=w[:, :-1]).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
            opt.step()
            opt.zero_grad(set_to_none=True)
            return float(loss)

        return step, base, cfg

    if variant == "ours-no-deepspeed":  # diagnostic: our network with plain torch, to size the engine's cost
        from model.network import build_model

        base = _rss_mib()
        model = build_model(cfg, dev)
        params = [p for p in model.parameters()]
        opt = torch.optim.AdamW([{"params": [p for p in params if p.ndim >= 2], "weight_decay": WD},
                                 {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}],
                                lr=LR, betas=BETAS, fused=True)

        def plain_step(w: torch.Tensor) -> float:
            loss = model(w[:, :-1], w[:, 1:])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, CLIP)
            opt.step()
            opt.zero_grad(set_to_none=True)
            return float(loss)

        return plain_step, base, cfg

    from lmforge_core.config.train import TrainConfig
    from model.engine import init_distributed, init_single_process
    from model.network import build_model

    init_single_process()
    init_distributed()
    base = _rss_mib()
    model = build_model(cfg)
    if variant == "ours-compiled-blocks":  # measured: slower than eager here, so training does not do it
        for block in model.layers:
            block.compile()
    tcfg = TrainConfig(global_batch=batch, micro_batch=batch, lr=LR, beta1=BETAS[0], beta2=BETAS[1],
                       weight_decay=WD, warmup_steps=0, steps=10**6, grad_clip=CLIP,
                       precision="bf16" if on_gpu else "fp32")
    return engine_step(model, tcfg), base, cfg


def engine_step(model: Any, tcfg: Any) -> Callable[[Any], float]:
    """One optimizer step of our DeepSpeed engine on a batch of windows (next-token targets); returns the loss."""
    from model.continual import TrainModule
    from model.engine import create_engine

    engine = create_engine(TrainModule(model), tcfg, world=1, continuing=False)

    def step(w: Any) -> float:
        loss = engine(w[:, :-1], w[:, 1:])
        engine.backward(loss)
        engine.step()
        return float(loss)

    return step


def _sync(dev: str) -> None:
    import torch

    if dev == "cuda":
        torch.cuda.synchronize()


def worker(variant: str, name: str, steps: int, batch: int, seq: int, warmup: int, dev: str) -> None:
    """Warm up, then run one timed round per ``run`` line on stdin; ``stop`` prints the memory figure."""
    from model.fused_ops import use_fused_ops

    with use_fused_ops("off" if variant.endswith("-fused-off") else "auto"):
        _timed_rounds(variant, name, steps, batch, seq, warmup, dev)


def _timed_rounds(variant: str, name: str, steps: int, batch: int, seq: int, warmup: int, dev: str) -> None:
    import torch

    step, base, cfg = _build(variant, name, batch, seq, dev)
    gen = torch.Generator().manual_seed(1)
    data = torch.randint(0, cfg.vocab_size, (steps, batch, seq + 1), generator=gen).to(dev)
    for i in range(warmup):
        step(data[i % steps])
    print(json.dumps({"ready": True, "params": cfg.num_params(),
                      "flops_per_token": cfg.matmul_flops_per_token(seq)}), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        _sync(dev)
        start = time.perf_counter()
        for i in range(steps):
            step(data[i])
        _sync(dev)
        print(json.dumps({"tokens_per_s": steps * batch * seq / (time.perf_counter() - start)}), flush=True)
    if dev == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    print(json.dumps({"peak_mib": peak}), flush=True)


def _start(variant: str, name: str, args: argparse.Namespace) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--worker", variant, name, "--steps", str(args.steps), "--warmup",
         str(args.warmup), "--batch", str(args.batch), "--seq", str(args.seq), "--device", args.device],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return proc, _read(proc)


def _read(proc: subprocess.Popen) -> dict:
    for line in proc.stdout:
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"benchmark worker exited with {proc.wait()}")


def _ratio(ours: list[float], peer: list[float], name: str) -> str:
    ratios = [o / p for o, p in zip(ours, peer, strict=True)]
    return (f"  {max(ours) / max(peer):.2f}x {name} (best vs best), "
            f"{statistics.median(ratios):.2f}x (median of per-round ratios)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["tiny", "20m"])
    parser.add_argument("--variants", nargs="+", default=["hf", "ours", "ours-fused-off"],
                        help="hf, ours, ours-fused-off, ours-no-deepspeed, ours-compiled-blocks")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per variant, taken in turn")
    parser.add_argument("--steps", type=int, default=3, help="training steps per timed round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None,
                        help="default: cuda where a GPU is present (bf16), else cpu (fp32)")
    parser.add_argument("--worker", nargs=2, metavar=("VARIANT", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.worker:
        worker(args.worker[0], args.worker[1], args.steps, args.batch, args.seq, args.warmup, args.device)
        return

    from model.metrics import measure_matmul_peak, peak_flops

    on_gpu = args.device == "cuda"
    peaks = [peak_flops("bf16") if on_gpu else measure_matmul_peak()]
    print(f"batch {args.batch} x {args.seq}, AdamW, {'bf16 on ' + args.device if on_gpu else 'fp32'}, "
          f"{args.rounds} interleaved rounds of {args.steps} steps")
    for name in args.configs:
        workers = {v: _start(v, name, args) for v in args.variants}
        rounds: dict[str, list[float]] = {v: [] for v in args.variants}
        for _ in range(args.rounds):
            if not on_gpu:
                peaks.append(measure_matmul_peak())  # the peak is measured in turn with the variants too
            for variant, (proc, _) in workers.items():
                proc.stdin.write("run\n")
                proc.stdin.flush()
                rounds[variant].append(_read(proc)["tokens_per_s"])
        memory = {}
        for variant, (proc, _) in workers.items():
            proc.stdin.write("stop\n")
            proc.stdin.flush()
            memory[variant] = _read(proc)["peak_mib"]
            proc.wait()
        info = workers[args.variants[0]][1]
        peak = max(peaks)
        where = "nominal dense bf16 peak" if on_gpu else "fp32 matmul peak (best of the measurements between rounds)"
        print(f"\n{name} ({info['params'] / 1e6:.1f}M parameters); {where} {peak / 1e9:.1f} GFLOP/s")
        for variant in args.variants:
            best = max(rounds[variant])
            mfu = info["flops_per_token"] * best / peak
            line = f"  {variant:14s} {best:8.0f} tokens/s (best round)  MFU {mfu:5.1%}  peak +{memory[variant]:.0f} MiB"
            if "hf" in rounds and variant != "hf":
                line += _ratio(rounds[variant], rounds["hf"], "HF")
            print(line)
        if "ours" in rounds and "ours-fused-off" in rounds:
            print("  fused ops alone: ours (fused_ops=auto) vs ours-fused-off" + _ratio(rounds["ours"],
                                                                                    rounds["ours-fused-off"], "off"))


if __name__ == "__main__":
    main()
