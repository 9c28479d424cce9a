"""Throughput and model-FLOPs utilisation (MFU), and the peak FLOP/s it is measured against."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

# Dense (no sparsity) tensor-core peaks per GPU, FLOP/s, by precision.
NOMINAL_GPU_PEAKS = {
    "H100": {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12},
    "H200": {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12},
    "A100": {"bf16": 312e12, "fp16": 312e12, "fp32": 19.5e12},
    "L4": {"bf16": 121e12, "fp16": 121e12, "fp32": 30e12},
}


def measure_matmul_peak(n: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """Best observed FLOP/s of an n x n matmul on this machine (with the current torch thread count)."""
    gen = torch.Generator().manual_seed(0)  # leaves the global RNG (dropout streams) untouched
    a, b = torch.randn(n, n, dtype=dtype, generator=gen), torch.randn(n, n, dtype=dtype, generator=gen)
    torch.mm(a, b)  # warm up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def peak_flops(precision: str, cache_file: Path | None = None, configured: float | None = None) -> float:
    """The MFU denominator for the whole machine: configured, nominal for a known GPU, or the CPU's
    measured fp32 matmul peak (measured once, cached in ``cache_file``)."""
    if configured:
        return configured
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        for key, peaks in NOMINAL_GPU_PEAKS.items():
            if key in name:
                return peaks[precision] * torch.cuda.device_count()
    key = f"cpu-{precision}-threads{torch.get_num_threads()}"
    cached = {}
    if cache_file is not None and cache_file.is_file():
        cached = json.loads(cache_file.read_text())
        if key in cached:
            return float(cached[key])
    value = measure_matmul_peak()
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        cache_file.write_text(json.dumps(cached | {key: value}, indent=2))
    return value


def mfu(flops_per_token: float, tokens_per_second: float, peak: float) -> float:
    return flops_per_token * tokens_per_second / peak
