"""ONNX export of the network with its KV cache, checked against PyTorch with onnxruntime before it counts.

An export writes ``model.onnx`` and ``export.json`` (format, shapes, tensor names, opset, sha256 of the
graph, the parity check's largest logit differences). :func:`export_onnx` refuses (raises
:class:`ExportParityError`) when onnxruntime's logits differ from the training network's by more than the
tolerance on a prefill step, a decode step after it, or a left-padded batch of two sequences.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.network import KVCache, Transformer
from model.weights import sha256_file
from serving.onnx_files import (
    FORMAT,
    MANIFEST_FILE,
    ONNX_FILE,
    ExportError,
    input_names,
    ort_session,
    ort_step,
    output_names,
)
from serving.onnx_graph import CachedLM, empty_past

OPSET = 17
DEFAULT_TOLERANCE = 1e-3


class ExportParityError(ExportError):
    """onnxruntime's outputs differ from PyTorch's by more than the tolerance."""


@dataclass
class ParityReport:
    prefill_max_abs: float
    decode_max_abs: float
    padded_batch_max_abs: float
    tolerance: float
    prompt_tokens: int

    @property
    def max_abs(self) -> float:
        return max(self.prefill_max_abs, self.decode_max_abs, self.padded_batch_max_abs)


@dataclass
class OnnxExport:
    directory: Path
    sha256: str
    parity: ParityReport
    config: dict[str, Any]
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def onnx_path(self) -> Path:
        return self.directory / ONNX_FILE


def _dynamic_axes(n_layers: int) -> dict[str, dict[int, str]]:
    axes: dict[str, dict[int, str]] = {
        "input_ids": {0: "batch", 1: "sequence"},
        "position_ids": {0: "batch", 1: "sequence"},
        "attention_mask": {0: "batch", 1: "total_sequence"},
        "logits": {0: "batch", 1: "sequence"},
    }
    for i in range(n_layers):
        for kind in ("key", "value"):
            axes[f"past_{kind}_{i}"] = {0: "batch", 2: "past_sequence"}
            axes[f"present_{kind}_{i}"] = {0: "batch", 2: "total_sequence"}
    return axes


def _trace_inputs(model: Transformer) -> tuple[torch.Tensor, ...]:
    """Dummy inputs with a non-empty past so the traced graph is the general (decode-capable) one."""
    b, past, t = 2, 3, 2
    ids = torch.randint(0, model.config.vocab_size, (b, t))
    positions = torch.arange(past, past + t).expand(b, t).contiguous()
    mask = torch.ones(b, past + t, dtype=torch.int64)
    return (ids, positions, mask, *[p.normal_() for p in empty_past(model, b, past)])


def write_onnx(model: Transformer, path: Path) -> None:
    """Trace ``model`` into ``path`` (TorchScript exporter: no onnxscript dependency, dynamic axes)."""
    n_layers = model.config.n_layers
    wrapper = CachedLM(model).eval()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(
            wrapper, _trace_inputs(model), str(tmp), dynamo=False, opset_version=OPSET,
            input_names=input_names(n_layers), output_names=output_names(n_layers),
            dynamic_axes=_dynamic_axes(n_layers), do_constant_folding=True,
        )
    os.replace(tmp, path)


def _torch_logits(model: Transformer, ids: list[int], extra: int) -> tuple[np.ndarray, np.ndarray]:
    """Prefill logits of ``ids`` and the decode-step logits of token ``extra`` after it (training network)."""
    cache = KVCache(model.config, batch=1, max_len=len(ids) + 1)
    with torch.no_grad():
        prefill = model(torch.tensor([ids]), cache=cache, start_pos=0)
        decode = model(torch.tensor([[extra]]), cache=cache, start_pos=len(ids))
    return prefill[0].numpy(), decode[0].numpy()


def _empty_np(config: Any, batch: int, dtype: np.dtype) -> list[np.ndarray]:
    return [np.zeros((batch, config.kv_heads, 0, config.head_dim), dtype=dtype) for _ in range(2 * config.n_layers)]


def check_parity(model: Transformer, session: Any, prompt: list[int], tolerance: float = DEFAULT_TOLERANCE,
                 dtype: np.dtype = np.dtype(np.float32)) -> ParityReport:
    """Compare onnxruntime with the training network on ``prompt`` (prefill, one decode step, padded batch)."""
    cfg = model.config
    if not 2 <= len(prompt) < cfg.context:
        raise ExportError(f"parity prompt needs 2..{cfg.context - 1} tokens, got {len(prompt)}")
    t = len(prompt)
    ids = np.array([prompt])
    logits, past = ort_step(session, ids, np.arange(t)[None], np.ones((1, t)), _empty_np(cfg, 1, dtype))
    nxt = int(logits[0, -1].argmax())
    ref_prefill, ref_decode = _torch_logits(model, prompt, nxt)
    step, _ = ort_step(session, np.array([[nxt]]), np.array([[t]]), np.ones((1, t + 1)), past)
    # the same prompt next to a shorter one, left-padded: what a continuous batch looks like
    short = prompt[: max(1, t // 2)]
    pad = t - len(short)
    batch_ids = np.array([prompt, [0] * pad + short])
    positions = np.array([list(range(t)), [0] * pad + list(range(len(short)))])
    mask = np.array([[1] * t, [0] * pad + [1] * len(short)])
    padded, _ = ort_step(session, batch_ids, positions, mask, _empty_np(cfg, 2, dtype))
    ref_short, _ = _torch_logits(model, short, 0)
    report = ParityReport(
        prefill_max_abs=float(np.abs(logits[0].astype(np.float32) - ref_prefill).max()),
        decode_max_abs=float(np.abs(step[0].astype(np.float32) - ref_decode).max()),
        padded_batch_max_abs=float(max(np.abs(padded[0].astype(np.float32) - ref_prefill).max(),
                                       np.abs(padded[1, pad:].astype(np.float32) - ref_short).max())),
        tolerance=tolerance, prompt_tokens=t,
    )
    if not np.isfinite(report.max_abs) or report.max_abs > tolerance:
        raise ExportParityError(
            f"onnxruntime logits differ from PyTorch by {report.max_abs:.3g} (prefill {report.prefill_max_abs:.3g}, "
            f"decode {report.decode_max_abs:.3g}, padded batch {report.padded_batch_max_abs:.3g}), over the "
            f"tolerance {tolerance:g}: the export is refused"
        )
    return report


def export_onnx(model: Transformer, directory: Path, prompt: list[int],
                tolerance: float = DEFAULT_TOLERANCE, extra: dict[str, Any] | None = None) -> OnnxExport:
    """Export ``model`` to ``directory/model.onnx``, check it on ``prompt`` (real token ids) and write the manifest."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = model.eval().float()
    path = directory / ONNX_FILE
    try:
        write_onnx(model, path)
    except Exception as exc:
        raise ExportError(f"torch.onnx.export failed for the network: {exc}") from exc
    parity = check_parity(model, ort_session(path), prompt, tolerance)
    export = OnnxExport(directory=directory, sha256=sha256_file(path), parity=parity, config=model.config.to_dict())
    write_manifest(export, extra)
    return export


def write_manifest(export: OnnxExport, extra: dict[str, Any] | None = None) -> None:
    n_layers = export.config["n_layers"]
    data = {
        "format": FORMAT, "opset": OPSET, "model": export.config, "files": {ONNX_FILE: export.sha256},
        "inputs": input_names(n_layers), "outputs": output_names(n_layers),
        "parity": asdict(export.parity) | {"max_abs": export.parity.max_abs},
        "variants": export.variants, **(extra or {}),
    }
    tmp = export.directory / f".{MANIFEST_FILE}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, export.directory / MANIFEST_FILE)
