"""Every ``config.pbtxt`` of the model repository, generated from Triton's own ``ModelConfig`` protobuf.

Configs are built as protobuf messages (so a misspelt field fails here, not in the server) and written
in text format; :func:`validate_config` parses a file back with the same schema (tritonclient ships it),
which is how a hand-edited or foreign config is checked too.

Models (one repository version per published model version, all four with the same number):
- ``tokenizer``: python backend, dynamic batching; TEXT -> TOKEN_IDS and TOKEN_IDS -> TEXT.
- ``lm``: the network. ``config.pbtxt`` is the python-backend variant running onnxruntime (servers without
  the onnxruntime/TensorRT backends, such as the bundled CPU server); ``configs/onnxruntime_gpu.pbtxt``
  (``onnxruntime_onnx`` with the TensorRT accelerator) and ``configs/tensorrt.pbtxt`` (``tensorrt_plan``)
  are for production servers, chosen with ``tritonserver --model-config-name``.
- ``generate``: python backend, decoupled: token ids in, one response per new token, continuous batching.
- ``generate_text``: python backend, decoupled: text in, text pieces out (the one text-in/text-out entry).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from serving.tensorrt import ort_tensorrt_settings

TOKENIZER, LM, GENERATE, TEXT = "tokenizer", "lm", "generate", "generate_text"
MODELS = (LM, TOKENIZER, GENERATE, TEXT)  # load order: what a model calls is loaded before it
SHIM_CLASSES = {TOKENIZER: "TokenizerModel", LM: "LMModel", GENERATE: "GenerateModel", TEXT: "TextModel"}


class ConfigError(ValueError):
    """A config.pbtxt does not parse against Triton's ModelConfig schema or breaks a rule of ours."""


@dataclass(frozen=True)
class ServingOptions:
    """What the repository writer puts into the configs (the GPU variants are written alongside)."""

    max_slots: int = 8  # continuous-batching slots of `generate`
    max_tokens_limit: int = 256
    decode_backend: str = "inprocess"  # or "bls": the decode step through the `lm` model
    instances: int = 1
    threads: int = 1  # onnxruntime intra-op threads per session
    project_source: str = ""  # folder to import the project from in the python stub ("" = installed package)
    trt_cache_dir: str = "/var/cache/lmforge/tensorrt"  # on the GPU server; must be writable there


def _tensor(kind: type, name: str, dtype: str, dims: list[int], optional: bool = False):  # type: ignore[no-untyped-def]
    t = kind(name=name, data_type=mc.DataType.Value(f"TYPE_{dtype}"), dims=dims)
    if optional:
        t.optional = True
    return t


def _params(config: mc.ModelConfig, values: dict[str, str]) -> None:
    for key, value in values.items():
        config.parameters[key].string_value = value


def _python(name: str, version: int, options: ServingOptions, *, decoupled: bool = False,
            max_batch: int = 0) -> mc.ModelConfig:
    config = mc.ModelConfig(name=name, backend="python", max_batch_size=max_batch)
    config.version_policy.specific.versions.append(version)
    config.instance_group.append(mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_CPU, count=options.instances))
    config.model_transaction_policy.decoupled = decoupled
    _params(config, {"lmforge_model": SHIM_CLASSES[name], "lmforge_source": options.project_source,
                     "threads": str(options.threads)})
    return config


def tokenizer_config(version: int, options: ServingOptions) -> mc.ModelConfig:
    config = _python(TOKENIZER, version, options, max_batch=8)
    config.dynamic_batching.max_queue_delay_microseconds = 500
    config.input.extend([_tensor(mc.ModelInput, "TEXT", "STRING", [1], optional=True),
                         _tensor(mc.ModelInput, "TOKEN_IDS", "INT64", [-1], optional=True)])
    config.output.extend([_tensor(mc.ModelOutput, "TOKEN_IDS", "INT64", [-1]),
                          _tensor(mc.ModelOutput, "TEXT", "STRING", [1])])
    return config


def _lm_io(config: mc.ModelConfig, n_layers: int, kv_heads: int, head_dim: int) -> None:
    config.input.extend([_tensor(mc.ModelInput, n, "INT64", [-1, -1])
                         for n in ("input_ids", "position_ids", "attention_mask")])
    config.output.append(_tensor(mc.ModelOutput, "logits", "FP32", [-1, -1, -1]))
    for i in range(n_layers):
        for kind in ("key", "value"):
            config.input.append(_tensor(mc.ModelInput, f"past_{kind}_{i}", "FP32", [-1, kv_heads, -1, head_dim]))
            config.output.append(_tensor(mc.ModelOutput, f"present_{kind}_{i}", "FP32", [-1, kv_heads, -1, head_dim]))


def lm_configs(version: int, options: ServingOptions, n_layers: int, kv_heads: int,
               head_dim: int) -> dict[str, mc.ModelConfig]:
    """``{"config": python variant, "onnxruntime_gpu": ..., "tensorrt": ...}`` of the ``lm`` model.

    The network's batch axis is inside the graph (KV caches of different lengths cannot be concatenated
    by the server), so ``max_batch_size`` is 0 and batching is `generate`'s continuous batching.
    """
    python = _python(LM, version, options)
    ort = mc.ModelConfig(name=LM, platform="onnxruntime_onnx", max_batch_size=0)
    trt = mc.ModelConfig(name=LM, platform="tensorrt_plan", max_batch_size=0, default_model_filename="model.plan")
    for config in (python, ort, trt):
        _lm_io(config, n_layers, kv_heads, head_dim)
    for config in (ort, trt):
        config.version_policy.specific.versions.append(version)
        config.instance_group.append(mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_GPU, count=1))
    accelerator = ort.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
    trt_settings = ort_tensorrt_settings(options.trt_cache_dir)
    accelerator.parameters.update({
        "precision_mode": "FP16" if trt_settings["trt_fp16_enable"] == "true" else "FP32",
        "max_workspace_size_bytes": trt_settings["trt_max_workspace_size"],
        "trt_engine_cache_enable": trt_settings["trt_engine_cache_enable"],
        "trt_engine_cache_path": trt_settings["trt_engine_cache_path"],
    })
    return {"config": python, "onnxruntime_gpu": ort, "tensorrt": trt}


def generate_config(version: int, options: ServingOptions) -> mc.ModelConfig:
    config = _python(GENERATE, version, options, decoupled=True)
    config.input.append(_tensor(mc.ModelInput, "input_ids", "INT64", [-1]))
    config.output.append(_tensor(mc.ModelOutput, "token_id", "INT64", [1]))
    _params(config, {"max_slots": str(options.max_slots), "max_tokens_limit": str(options.max_tokens_limit),
                     "decode_backend": options.decode_backend})
    return config


def text_config(version: int, options: ServingOptions) -> mc.ModelConfig:
    config = _python(TEXT, version, options, decoupled=True)
    config.input.append(_tensor(mc.ModelInput, "text_input", "STRING", [1]))
    config.output.append(_tensor(mc.ModelOutput, "text_output", "STRING", [1]))
    return config


def to_text(config: mc.ModelConfig) -> str:
    return text_format.MessageToString(config)


def validate_config(text: str, source: str = "config.pbtxt") -> mc.ModelConfig:
    """Parse ``text`` with Triton's ModelConfig schema; ConfigError names the file and the problem."""
    try:
        config = text_format.Parse(text, mc.ModelConfig())
    except text_format.ParseError as exc:
        raise ConfigError(f"{source} is not a valid Triton model config: {exc}") from exc
    if not config.name:
        raise ConfigError(f"{source} has no model name")
    if not (config.backend or config.platform):
        raise ConfigError(f"{source} ({config.name}) names neither a backend nor a platform")
    return config


def checked_text(config: mc.ModelConfig, source: str) -> str:
    """``config`` in text format, parsed back with Triton's schema first (ConfigError names ``source``)."""
    text = to_text(config)
    validate_config(text, source)
    return text


def write_config(path: Path, config: mc.ModelConfig) -> None:
    """Validate, then write atomically (a server polling the repository never reads half a file)."""
    text = checked_text(config, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def serve_only(config: mc.ModelConfig, versions: list[int]) -> mc.ModelConfig:
    """``config`` with its version policy set to serve exactly ``versions``."""
    config.version_policy.Clear()
    config.version_policy.specific.versions.extend(sorted(set(versions)))
    return config


def set_served_versions(path: Path, versions: list[int]) -> None:
    """Rewrite the version policy of an existing config to serve exactly ``versions``."""
    write_config(path, serve_only(validate_config(path.read_text(), str(path)), versions))
