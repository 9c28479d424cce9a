"""Verify before publish (what TFX's InfraValidator does for TF Serving, here for Triton), and switching the
served version of a running server in explicit model-control mode.

:func:`verify_staged` loads a staged version into a throw-away Triton server on free ports, sends smoke
prompts, and checks that greedy outputs equal the PyTorch network's token for token, recording latency.
:func:`switch_version` moves a running server from one version to another: first both versions are
served and confirmed ready, then the old one is dropped, callers before callees, so no request finds its
model missing.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from model.network import KVCache, Transformer
from serving.client import LMClient, ServingError
from serving.triton_config import MODELS, ServingOptions
from serving.triton_repository import ModelRepository, StagedVersion, scratch_repository
from serving.triton_server import start_server, stop_pid

log = logging.getLogger(__name__)


class VerificationError(RuntimeError):
    """The staged version did not serve, or served outputs that differ from the PyTorch network's."""


@dataclass
class VerificationReport:
    version: int
    prompts: int
    max_tokens: int
    equal: bool
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    latency_ms: dict[str, float] = field(default_factory=dict)
    server_start_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def reference_greedy(model: Transformer, prompt: list[int], max_tokens: int, eos_ids: Collection[int]) -> list[int]:
    """Greedy new tokens of the training network itself (its own KV cache; the end token, any of ``eos_ids``,
    not included)."""
    cache = KVCache(model.config, batch=1, max_len=min(model.config.context, len(prompt) + max_tokens))
    out: list[int] = []
    with torch.inference_mode():
        logits = model(torch.tensor([prompt]), cache=cache, start_pos=0)[0, -1]
        for _ in range(max_tokens):
            token = int(logits.argmax())
            if token in eos_ids:
                break
            out.append(token)
            pos = len(prompt) + len(out) - 1
            if len(out) == max_tokens or pos + 1 > model.config.context - 1:
                break
            logits = model(torch.tensor([[token]]), cache=cache, start_pos=pos)[0, -1]
    return out


def _smoke(client: LMClient, model: Transformer, prompts: list[list[int]], max_tokens: int,
           eos_ids: Collection[int], report: VerificationReport) -> None:
    latencies = []
    for prompt in prompts:
        served = client.generate(prompt, max_tokens=max_tokens, temperature=0.0)
        latencies.append(served.latency_s * 1000)
        expected = reference_greedy(model, prompt, max_tokens, eos_ids)
        if served.tokens != expected:
            report.mismatches.append({"prompt": prompt, "served": served.tokens, "pytorch": expected})
    report.latency_ms = {"p50": statistics.median(latencies), "max": max(latencies)}
    report.equal = not report.mismatches


def verify_staged(staged: StagedVersion, options: ServingOptions, model: Transformer, prompts: list[list[int]],
                  *, max_tokens: int = 16, eos_ids: Collection[int]) -> VerificationReport:
    """Serve ``staged`` alone in a throw-away server and compare greedy outputs with ``model``'s."""
    if not prompts:
        raise VerificationError("verification needs at least one smoke prompt")
    report = VerificationReport(staged.version, len(prompts), max_tokens, equal=False)
    with tempfile.TemporaryDirectory(prefix="lmforge-verify-") as tmp:
        repo = scratch_repository(staged, Path(tmp) / "repository", options)
        started = time.perf_counter()
        try:
            state = start_server(repo, Path(tmp) / "server", model_control="explicit", load=list(MODELS))
        except RuntimeError as exc:
            raise VerificationError(f"version {staged.version} did not load in a fresh Triton server: {exc}") from exc
        report.server_start_s = time.perf_counter() - started
        client = LMClient(state.grpc_url, state.http_url, timeout=60)
        try:
            _smoke(client, model.eval(), prompts, max_tokens, eos_ids, report)
        except ServingError as exc:
            raise VerificationError(f"version {staged.version} failed its smoke prompts: {exc}") from exc
        finally:
            client.close()
            stop_pid(state.pid)
    if not report.equal:
        first = report.mismatches[0]
        raise VerificationError(f"version {staged.version}: served greedy tokens {first['served'][:8]} differ from "
                                f"PyTorch's {first['pytorch'][:8]} on {len(report.mismatches)} of {len(prompts)} "
                                "smoke prompts; not published")
    return report


LOAD_ATTEMPTS = 3


def _load(client: Any, name: str, versions: list[int], timeout: float) -> None:
    """One model's load, retried where it failed without timing out. Triton 2.51's S3 filesystem once failed
    one of two versions loading together with a garbled bucket name ("Could not get MetaData for bucket with
    name \\u0007"; the same load of the same files then succeeds): a load is idempotent, a deadline is not retried."""
    for attempt in range(1, LOAD_ATTEMPTS + 1):
        try:
            client.load_model(name, client_timeout=timeout)
            return
        except Exception as exc:
            if attempt == LOAD_ATTEMPTS or "DEADLINE_EXCEEDED" in str(exc):
                raise ServingError(f"loading model {name} (versions {versions}) failed or did not complete within "
                                   f"{timeout:.0f}s (attempt {attempt} of {LOAD_ATTEMPTS}): {exc}") from exc
            log.warning("loading model %s (versions %s) failed, retrying: %s", name, versions, exc)
            time.sleep(attempt)


def _load_all(client: Any, order: tuple[str, ...], versions: list[int], timeout: float) -> None:
    """Load ``order`` and wait until ``versions`` of each are ready. Every call has a deadline: a load
    returns only once the versions it drops are unloaded, and an unload waits for their open streams."""
    for name in order:
        deadline = time.monotonic() + timeout
        _load(client, name, versions, timeout)
        while not all(client.is_model_ready(name, str(v), client_timeout=10) for v in versions):
            if time.monotonic() > deadline:
                raise ServingError(f"model {name} versions {versions} not ready after {timeout:.0f}s")
            time.sleep(0.2)


def switch_version(repository: ModelRepository, grpc_url: str, old: int | None, new: int,
                   timeout: float = 120.0) -> None:
    """Serve ``new`` on the running server (explicit model control); ``old`` stays until ``new`` is ready."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(grpc_url)
    try:
        if old is not None and old != new:
            repository.serve_versions([old, new])
            _load_all(client, MODELS, [old, new], timeout)
        repository.serve_versions([new])
        _load_all(client, tuple(reversed(MODELS)), [new], timeout)  # callers drop the old version first
    except Exception as exc:
        raise ServingError(f"switching the server at {grpc_url} from version {old} to {new} failed: {exc}") from exc
    finally:
        client.close()
