"""Compressed variants of an ONNX export (fp16, dynamic int8), each with its perplexity change measured.

A variant is only as good as its measured cost: each one is scored on the same validation windows as the
fp32 graph, and the perplexity of both and their ratio are recorded in the export manifest. A variant the
CPU execution provider cannot run (fp16 kernels are a GPU matter) is recorded with that reason instead.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from model.weights import sha256_file
from serving.onnx_export import OnnxExport, write_manifest
from serving.onnx_files import ONNX_FILE, ort_session, ort_step

VARIANT_FILES = {"fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}


def onnx_perplexity(session: Any, windows: np.ndarray, config: dict[str, Any], batch: int = 8,
                    dtype: np.dtype = np.dtype(np.float32)) -> float:
    """exp(mean next-token NLL) of the graph over ``windows`` (n, T) of token ids, full-window prefill."""
    windows = np.asarray(windows, dtype=np.int64)
    if windows.ndim != 2 or windows.shape[1] < 2 or windows.shape[1] > config["context"]:
        raise ValueError(f"perplexity windows must be (n, 2..{config['context']}), got {windows.shape}")
    kv_heads = config.get("n_kv_heads") or config["n_heads"]
    head_dim = config["dim"] // config["n_heads"]
    total, count = 0.0, 0
    for start in range(0, len(windows), batch):
        chunk = windows[start : start + batch]
        b, t = chunk.shape
        past = [np.zeros((b, kv_heads, 0, head_dim), dtype=dtype) for _ in range(2 * config["n_layers"])]
        logits, _ = ort_step(session, chunk[:, :-1], np.tile(np.arange(t - 1), (b, 1)), np.ones((b, t - 1)), past)
        logits = logits.astype(np.float64)
        logits -= logits.max(-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        total -= np.take_along_axis(logp, chunk[:, 1:, None], axis=-1).sum()
        count += chunk[:, 1:].size
    return math.exp(total / count)


def _convert(kind: str, source: Path, dest: Path) -> None:
    import onnx

    if kind == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(source), str(dest), weight_type=QuantType.QInt8)
    elif kind == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        onnx.save(convert_float_to_float16(onnx.load(str(source)), keep_io_types=False), str(dest))
    else:
        raise ValueError(f"unknown ONNX variant {kind!r}; choose from {', '.join(VARIANT_FILES)}")


def add_variants(export: OnnxExport, windows: np.ndarray, kinds: tuple[str, ...] = ("fp16", "int8")) -> dict[str, Any]:
    """Write each variant next to ``model.onnx``, measure its validation perplexity against fp32's, record both."""
    base = onnx_perplexity(ort_session(export.onnx_path), windows, export.config)
    for kind in kinds:
        dest = export.directory / VARIANT_FILES[kind]
        _convert(kind, export.directory / ONNX_FILE, dest)
        entry: dict[str, Any] = {"file": dest.name, "sha256": sha256_file(dest), "fp32_perplexity": base,
                                 "validation_windows": len(windows)}
        dtype = np.dtype(np.float16 if kind == "fp16" else np.float32)
        try:
            ppl = onnx_perplexity(ort_session(dest), windows, export.config, dtype=dtype)
        except Exception as exc:  # onnxruntime raises its own Fail/NotImplemented types
            entry["runnable_on_cpu"] = False
            entry["reason"] = f"CPUExecutionProvider cannot run it: {str(exc).splitlines()[0][:200]}"
        else:
            entry |= {"runnable_on_cpu": True, "perplexity": ppl, "perplexity_ratio": ppl / base,
                      "size_ratio": dest.stat().st_size / export.onnx_path.stat().st_size}
        export.variants[kind] = entry
    write_manifest(export)
    return export.variants
