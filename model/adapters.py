"""LoRA adapters through PEFT on our network, saved in PEFT's format under Hugging Face Llama names.

PEFT's ``inject_adapter_in_model`` wraps ``nn.Linear`` submodules picked by name, so the adapters are PEFT's own
layers; nothing here computes a LoRA product. What this module adds is the naming: our blocks fuse q/k/v into
``attn.wqkv`` and gate/up into ``mlp.w13``, while a Hugging Face adapter has one LoRA pair per ``q_proj``,
``k_proj``, ... For a LoRA run the fused projections are split into :class:`SplitLinear` modules whose children
carry the Hugging Face names (their outputs concatenated are the fused output), so an adapter on ``q_proj``
here is exactly an adapter on ``q_proj`` in ``LlamaForCausalLM`` (same shapes, same parameter count), and the
saved file renames each module through :data:`model.hf_interop.LAYER_MODULES`. ``peft.PeftModel.from_pretrained``
then loads it onto the base checkpoint in transformers.

A LoRA run's weights folder holds the merged model (our format, what evaluation and serving load) and, in
``adapter/``, the adapter that turns its base into it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from lmforge_core.config.train import TrainConfig
from lmforge_core.fileio import atomic_path, atomic_write
from model.hf_interop import LAYER_MODULES, fused_sizes
from model.network import Transformer

ADAPTER_DIR = "adapter"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_NAME = "default"
PEFT_PREFIX = "base_model.model."  # what PeftModelForCausalLM puts before the transformers module names


class SplitLinear(nn.Module):
    """A fused projection held as the separate ``nn.Linear`` parts Hugging Face Llama has (q/k/v, gate/up)."""

    def __init__(self, fused: nn.Linear, names: tuple[str, ...], sizes: list[int]) -> None:
        super().__init__()
        self.names = names
        for name, weight in zip(names, fused.weight.detach().split(sizes), strict=True):
            part = nn.Linear(fused.in_features, weight.shape[0], bias=False, device=weight.device, dtype=weight.dtype)
            part.weight = nn.Parameter(weight.clone(), requires_grad=fused.weight.requires_grad)
            self.add_module(name, part)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.get_submodule(name)(x) for name in self.names], dim=-1)


def hf_module_names(n_layers: int) -> dict[str, str]:
    """Our projection module paths (fused ones as split by :func:`split_fused`) -> Hugging Face Llama paths."""
    names = {}
    for i in range(n_layers):
        for ours, theirs in LAYER_MODULES.items():
            for hf in theirs:
                if not hf.endswith("_proj"):
                    continue
                leaf = hf.rpartition(".")[2]
                path = f"layers.{i}.{ours}" + (f".{leaf}" if len(theirs) > 1 else "")
                names[path] = f"model.layers.{i}.{hf}"
    return names


def split_fused(model: Transformer) -> None:
    """Replace each block's fused projections by :class:`SplitLinear` (in place; the outputs are unchanged)."""
    for block in model.layers:
        for ours, theirs in LAYER_MODULES.items():
            if len(theirs) > 1:
                parent, _, attr = ours.rpartition(".")
                owner = block.get_submodule(parent)
                leaves = tuple(hf.rpartition(".")[2] for hf in theirs)
                setattr(owner, attr, SplitLinear(getattr(owner, attr), leaves, fused_sizes(ours, model.config)))


def apply_lora(model: Transformer, cfg: TrainConfig) -> None:
    """Freeze ``model`` and inject PEFT LoRA adapters into the projections ``cfg.lora_targets`` names."""
    from peft import LoraConfig, inject_adapter_in_model

    split_fused(model)
    wanted = set(cfg.lora_targets)
    targets = [ours for ours, hf in hf_module_names(model.config.n_layers).items()
               if hf.rpartition(".")[2] in wanted]
    model.requires_grad_(False)
    config = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                        target_modules=targets, bias="none")
    inject_adapter_in_model(config, model, adapter_name=ADAPTER_NAME)


def has_adapters(model: nn.Module) -> bool:
    return ADAPTER_NAME in getattr(model, "peft_config", {})


def _lora_layers(model: nn.Module) -> dict[str, Any]:
    from peft.tuners.lora import LoraLayer

    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}


def merged_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    """Our plain (fused, adapter-free) state dict of the model with its adapters merged: each adapted
    weight is the base weight plus PEFT's ``get_delta_weight``; fp32 copies on the CPU."""
    lora = _lora_layers(model)
    state = {name: t for name, t in model.state_dict().items()
             if not any(name.startswith(owner + ".") for owner in lora)}
    with torch.no_grad():
        for name, layer in lora.items():
            state[f"{name}.weight"] = layer.base_layer.weight + layer.get_delta_weight(ADAPTER_NAME)
    for i, block in enumerate(model.layers):
        for ours, theirs in LAYER_MODULES.items():
            if isinstance(block.get_submodule(ours), SplitLinear):
                leaves = [hf.rpartition(".")[2] for hf in theirs]
                parts = [state.pop(f"layers.{i}.{ours}.{leaf}.weight") for leaf in leaves]
                state[f"layers.{i}.{ours}.weight"] = torch.cat(parts, dim=0)
    return {k: v.detach().float().cpu().clone() for k, v in state.items()}


def adapter_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    """The adapter's tensors under the names ``PeftModel`` gives them on ``LlamaForCausalLM``."""
    from peft import get_peft_model_state_dict

    names = hf_module_names(model.config.n_layers)
    out = {}
    for key, tensor in get_peft_model_state_dict(model, adapter_name=ADAPTER_NAME).items():
        module, sep, rest = key.partition(".lora_")
        if not sep or module not in names:
            raise ValueError(f"adapter tensor {key!r} belongs to no Hugging Face Llama module")
        out[f"{PEFT_PREFIX}{names[module]}.lora_{rest}"] = tensor.detach().float().cpu().contiguous()
    return out


def save_adapter(model: Transformer, directory: Path, base: str | None = None) -> Path:
    """Write ``adapter_config.json`` and ``adapter_model.safetensors`` (PEFT's format, Hugging Face names).

    ``base`` names the model the adapter applies to (``base_model_name_or_path``)."""
    from peft import LoraConfig

    own = model.peft_config[ADAPTER_NAME]
    names = hf_module_names(model.config.n_layers)
    # from the adapted layers, not own.target_modules: PEFT shortens a long list of names to suffixes
    targets = sorted({names[path].rpartition(".")[2] for path in _lora_layers(model)})
    config = LoraConfig(r=own.r, lora_alpha=own.lora_alpha, lora_dropout=own.lora_dropout, target_modules=targets,
                        bias="none", task_type="CAUSAL_LM", base_model_name_or_path=base)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / ADAPTER_WEIGHTS) as tmp:
        save_file(adapter_state_dict(model), str(tmp), metadata={"format": "pt"})
    meta = config.to_dict() | {"target_modules": targets}  # PEFT holds them as a set; its own writer lists them
    atomic_write(directory / ADAPTER_CONFIG, json.dumps(meta, indent=2, sort_keys=True))
    return directory



def set_adapter_base(directory: Path, base: str) -> None:
    """Name the model an adapter applies to (``base_model_name_or_path``) in its ``adapter_config.json``."""
    path = Path(directory) / ADAPTER_CONFIG
    meta = json.loads(path.read_text()) | {"base_model_name_or_path": base}
    atomic_write(path, json.dumps(meta, indent=2, sort_keys=True))
