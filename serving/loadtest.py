"""Load test of the served ``generate`` model: N requests at a given concurrency, streamed over gRPC.

Reports requests/s, tokens/s, time to first token, inter-token latency and p50/p95/p99 latency (what
genai-perf reports; its ``perf_analyzer`` binary has no wheel here, so this is the measuring client).
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from serving.client import Generation, LMClient


@dataclass
class LoadReport:
    concurrency: int
    requests: int
    errors: int
    wall_s: float
    requests_per_s: float
    tokens_per_s: float
    ttft_ms_p50: float
    ttft_ms_p95: float
    itl_ms_mean: float
    latency_ms_p50: float
    latency_ms_p95: float
    latency_ms_p99: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summarize(results: list[Generation], errors: int, concurrency: int, wall: float) -> LoadReport:
    tokens = sum(len(r.tokens) for r in results)
    ttft = [r.ttft_s * 1000 for r in results]
    latency = [r.latency_s * 1000 for r in results]
    gaps = [(b - a) * 1000 for r in results for a, b in zip(r.token_times, r.token_times[1:], strict=False)]
    return LoadReport(concurrency, len(results) + errors, errors, wall, len(results) / wall, tokens / wall,
                      percentile(ttft, 0.5), percentile(ttft, 0.95), statistics.fmean(gaps) if gaps else float("nan"),
                      percentile(latency, 0.5), percentile(latency, 0.95), percentile(latency, 0.99))


def run_load(grpc_url: str, prompts: list[list[int]], *, concurrency: int, requests: int, max_tokens: int,
             temperature: float = 0.0, timeout: float = 120.0) -> LoadReport:
    """Send ``requests`` generations (prompts cycled), ``concurrency`` at a time, and summarize them."""
    if concurrency < 1 or requests < 1 or not prompts:
        raise ValueError("concurrency and requests must be >= 1 and at least one prompt given")
    client = LMClient(grpc_url, timeout=timeout)
    results: list[Generation] = []
    errors = 0

    def one(i: int) -> Generation:
        return client.generate(prompts[i % len(prompts)], max_tokens=max_tokens, temperature=float(temperature))

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for future in [pool.submit(one, i) for i in range(requests)]:
            try:
                results.append(future.result())
            except Exception:  # counted: a load test reports failures, it does not stop at the first
                errors += 1
    wall = time.perf_counter() - start
    client.close()
    return summarize(results, errors, concurrency, wall)
