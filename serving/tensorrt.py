"""The two GPU paths of the network: onnxruntime's TensorRT execution provider, and a TensorRT plan.

(a) On a GPU Triton server the ``lm`` model's config turns on onnxruntime's TensorRT accelerator (fp16,
    engine cache), so the server builds and caches the engine from the ONNX file itself: nothing to
    install here. :func:`ort_tensorrt_settings` is that configuration, one definition for the Triton
    config writer and for a direct onnxruntime session.
(b) Where the TensorRT Python API imports (the Triton/NGC container, a cloud build job), :func:`build_plan`
    builds an fp16 ``tensorrt_plan`` with optimization profiles over batch and sequence length.

The public registries carry no usable ``tensorrt`` wheel, so nothing here is a dependency: without it
:func:`build_plan_if_possible` logs one line and returns None, and the repository serves the ONNX model.
"""

from __future__ import annotations

import json
import logging
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PLAN_FILE = "model.plan"


@dataclass(frozen=True)
class PlanProfile:
    """Shape ranges the engine accepts: batch 1..max_batch, new tokens 1..context, cache 0..context."""

    max_batch: int
    context: int
    opt_batch: int = 4
    opt_sequence: int = 64

    def ranges(self, kv_heads: int, head_dim: int, n_layers: int) -> dict[str, tuple[tuple[int, ...], ...]]:
        b, c = self.max_batch, self.context
        ob, os_ = min(self.opt_batch, b), min(self.opt_sequence, c)
        shapes: dict[str, tuple[tuple[int, ...], ...]] = {
            "input_ids": ((1, 1), (ob, 1), (b, c)),
            "position_ids": ((1, 1), (ob, 1), (b, c)),
            "attention_mask": ((1, 1), (ob, os_), (b, c)),
        }
        for i in range(n_layers):
            for kind in ("key", "value"):
                shapes[f"past_{kind}_{i}"] = ((1, kv_heads, 0, head_dim), (ob, kv_heads, os_, head_dim),
                                              (b, kv_heads, c, head_dim))
        return shapes


def ort_tensorrt_settings(cache_dir: str, fp16: bool = True, workspace_bytes: int = 4 << 30) -> dict[str, str]:
    """Provider options of onnxruntime's TensorRT EP (also Triton's ``execution_accelerators`` parameters)."""
    return {
        "trt_fp16_enable": str(fp16).lower(),
        "trt_engine_cache_enable": "true",
        "trt_engine_cache_path": cache_dir,
        "trt_max_workspace_size": str(workspace_bytes),
    }


def tensorrt_module() -> Any | None:
    try:
        import tensorrt  # type: ignore[import-not-found]
    except Exception:  # ImportError, or a broken CUDA install raising OSError/RuntimeError at import
        return None
    return tensorrt


def hardware() -> dict[str, Any]:
    """What the artifact was built on (recorded with it)."""
    info: dict[str, Any] = {"machine": platform.machine(), "system": platform.system()}
    import torch

    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def build_plan(trt: Any, onnx_path: Path, out_dir: Path, profile: PlanProfile, model_cfg: dict[str, Any]) -> Path:
    """Build an fp16 engine from ``onnx_path`` into ``out_dir/model.plan`` and record its settings."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    opt = builder.create_optimization_profile()
    kv_heads = model_cfg.get("n_kv_heads") or model_cfg["n_heads"]
    ranges = profile.ranges(kv_heads, model_cfg["dim"] // model_cfg["n_heads"], model_cfg["n_layers"])
    for name, (lo, mid, hi) in ranges.items():
        opt.set_shape(name, lo, mid, hi)
    config.add_optimization_profile(opt)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}")
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = out_dir / PLAN_FILE
    plan.write_bytes(bytes(engine))
    settings = {"tensorrt": trt.__version__, "precision": "fp16", "profile": asdict(profile), "hardware": hardware()}
    (out_dir / "plan.json").write_text(json.dumps(settings, indent=2, sort_keys=True))
    return plan


def build_plan_if_possible(onnx_path: Path, out_dir: Path, profile: PlanProfile,
                           model_cfg: dict[str, Any]) -> Path | None:
    """The plan where TensorRT's Python API and a GPU are present; otherwise one log line and None."""
    trt = tensorrt_module()
    if trt is None or "gpu" not in hardware():
        log.info("TensorRT plan not built: %s; the repository serves the ONNX model",
                 "the tensorrt Python API does not import" if trt is None else "no CUDA GPU is visible")
        return None
    return build_plan(trt, onnx_path, out_dir, profile, model_cfg)
