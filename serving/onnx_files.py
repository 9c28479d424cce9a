"""The files of an ONNX export and running them with onnxruntime: importable without torch.

Triton's python stubs of the ``lm`` and ``tokenizer`` models import only this (and onnxruntime), so they
start in a fraction of the time a torch import takes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "lmforge.onnx.v1"
ONNX_FILE = "model.onnx"
MANIFEST_FILE = "export.json"


def input_names(n_layers: int) -> list[str]:
    names = ["input_ids", "position_ids", "attention_mask"]
    for i in range(n_layers):
        names += [f"past_key_{i}", f"past_value_{i}"]
    return names


def output_names(n_layers: int) -> list[str]:
    names = ["logits"]
    for i in range(n_layers):
        names += [f"present_key_{i}", f"present_value_{i}"]
    return names


class ExportError(RuntimeError):
    """The network could not be exported or its export is unusable."""


def ort_session(path: Path, providers: list[str] | None = None, threads: int = 0):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])


def ort_step(session: Any, ids: np.ndarray, positions: np.ndarray, mask: np.ndarray,
             past: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """One forward of the exported graph: logits and the grown cache."""
    feeds = {"input_ids": ids.astype(np.int64), "position_ids": positions.astype(np.int64),
             "attention_mask": mask.astype(np.int64)}
    n_layers = len(past) // 2
    for i in range(n_layers):
        feeds[f"past_key_{i}"], feeds[f"past_value_{i}"] = past[2 * i], past[2 * i + 1]
    out = session.run(None, feeds)
    return out[0], list(out[1:])


def read_manifest(directory: Path) -> dict[str, Any]:
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        raise ExportError(f"{path} does not exist: not an lmforge ONNX export")
    data = json.loads(path.read_text())
    if data.get("format") != FORMAT:
        raise ExportError(f"{path} has format {data.get('format')!r}, expected {FORMAT!r}")
    return data
