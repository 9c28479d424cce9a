"""DeepSpeed engine setup: the generated DeepSpeed config, process group, optimizer and LR schedule."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from lmforge_core.config.train import TrainConfig


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def init_single_process() -> None:
    """Make this process a world of one for DeepSpeed (in-line runs, tests, notebooks)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}.items():
        os.environ.setdefault(key, value)  # a launcher (torchrun, deepspeed) has set them already
    os.environ.setdefault("MASTER_PORT", str(free_port()))


def import_deepspeed() -> Any:
    """``deepspeed``, imported with its logger bound to stderr at WARNING level.

    DeepSpeed's log handler captures ``sys.stdout`` when the package is first imported, and its INFO lines
    (config dumps, accelerator detection) would otherwise mix into ``lmforge ... --json`` output.
    """
    with contextlib.redirect_stdout(sys.stderr):
        import deepspeed
        from deepspeed.utils import logger as ds_logger

    ds_logger.setLevel(logging.WARNING)
    return deepspeed


def init_distributed() -> tuple[int, int]:
    """Initialise the process group (gloo on CPU, nccl on GPU); returns (rank, world size)."""
    import torch.distributed as dist

    deepspeed = import_deepspeed()
    if not dist.is_initialized():
        with contextlib.redirect_stdout(sys.stderr):  # it print()s "op ... built successfully"
            deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def shutdown_distributed() -> None:
    """Wait for every rank, then close the process group.

    A rank that exits with its gloo group still open closes its sockets under a peer that may still be reading
    from them (the last collective of ZeRO-3's final checkpoint): gloo's I/O thread then throws "Connection closed
    by peer" outside any Python frame and the peer dies of SIGABRT after a finished run. More often so when the
    ranks drift apart on a loaded machine.
    """
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def resolve_precision(requested: str) -> str:
    """``auto`` is bf16 on a GPU that has it, fp16 on an older GPU, fp32 on CPU (no native bf16 there)."""
    if requested != "auto":
        if requested in ("bf16", "fp16") and not torch.cuda.is_available():
            raise ValueError(f"precision {requested} needs a GPU; this CPU emulates it ~60x slower: use fp32")
        return requested
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def fit_micro_batch(cfg: TrainConfig, world: int) -> TrainConfig:
    """``cfg`` with the largest micro-batch <= ``cfg.micro_batch`` that splits the global batch evenly over
    ``world`` processes, so a run can resume on another process count with the same global batch."""
    if cfg.global_batch % world:
        raise ValueError(f"global_batch {cfg.global_batch} cannot be split over {world} processes; "
                         "choose a process count that divides it")
    per_process = cfg.global_batch // world
    micro = max(m for m in range(1, min(cfg.micro_batch, per_process) + 1) if per_process % m == 0)
    return cfg if micro == cfg.micro_batch else cfg.model_copy(update={"micro_batch": micro})


def deepspeed_config(cfg: TrainConfig, world: int, precision: str, load_universal: bool = False) -> dict[str, Any]:
    per_step = cfg.micro_batch * world
    if cfg.global_batch % per_step:
        raise ValueError(f"global_batch {cfg.global_batch} is not a multiple of micro_batch {cfg.micro_batch} "
                         f"x {world} processes")
    zero: dict[str, Any] = {"stage": cfg.zero_stage}
    if cfg.offload_optimizer:
        if cfg.zero_stage == 0:
            raise ValueError("optimizer offload needs ZeRO stage 1 or higher")
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    if cfg.offload_params:
        if cfg.zero_stage != 3:
            raise ValueError("parameter offload needs ZeRO stage 3")
        zero["offload_param"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    adam: dict[str, Any] = {
        "lr": cfg.lr, "betas": [cfg.beta1, cfg.beta2], "eps": cfg.eps, "weight_decay": cfg.weight_decay,
        "torch_adam": True,
    }
    if precision == "fp32":
        adam["fused"] = True  # torch's fused AdamW kernel (CPU and CUDA): one pass over all parameters
    return {
        "train_batch_size": cfg.global_batch,
        "train_micro_batch_size_per_gpu": cfg.micro_batch,
        "gradient_accumulation_steps": cfg.global_batch // per_step,
        "gradient_clipping": cfg.grad_clip,
        "optimizer": {"type": "AdamW", "params": adam},
        "zero_optimization": zero,
        "zero_force_ds_cpu_optimizer": False,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16", "initial_scale_power": 16},
        "checkpoint": {"load_universal": load_universal},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def lr_multiplier(cfg: TrainConfig, continuing: bool) -> Callable[[int], float]:
    """Linear warmup (re-warming to ``rewarm_lr_ratio * lr`` when continuing), then cosine decay to
    ``min_lr_ratio * lr``, restarting every ``restart_every`` steps if set. Multiplies ``cfg.lr``."""
    warm = cfg.rewarm_steps if continuing else cfg.warmup_steps
    peak = cfg.rewarm_lr_ratio if continuing else 1.0

    def multiplier(step: int) -> float:
        if step < warm:
            return peak * (step + 1) / warm
        period = cfg.restart_every or max(1, cfg.steps - warm)
        pos = (step - warm) % period if cfg.restart_every else min(step - warm, period)
        cosine = 0.5 * (1.0 + math.cos(math.pi * pos / period))
        return peak * (cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * cosine)

    return multiplier


def param_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices, not norm gains (1-D tensors)."""
    decay = [p for p in module.parameters() if p.requires_grad and p.ndim >= 2]
    other = [p for p in module.parameters() if p.requires_grad and p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": other, "weight_decay": 0.0}]


def create_engine(module: nn.Module, cfg: TrainConfig, world: int, continuing: bool,
                  load_universal: bool = False) -> Any:
    """A DeepSpeed engine over ``module`` with AdamW and the warmup-cosine schedule."""
    deepspeed = import_deepspeed()
    from deepspeed.checkpoint.constants import (
        UNIVERSAL_CHECKPOINT_INFO,
        UNIVERSAL_CHECKPOINT_VERSION_KEY,
        UNIVERSAL_CHECKPOINT_VERSION_VALUE,
    )

    # Saved into every checkpoint so ds_to_universal can convert it for another process count.
    setattr(module, UNIVERSAL_CHECKPOINT_INFO, {UNIVERSAL_CHECKPOINT_VERSION_KEY: UNIVERSAL_CHECKPOINT_VERSION_VALUE})
    precision = resolve_precision(cfg.precision)
    ds_config = deepspeed_config(cfg, world, precision, load_universal)
    schedule = lr_multiplier(cfg, continuing)
    engine, _, _, _ = deepspeed.initialize(
        model=module,
        model_parameters=param_groups(module, cfg.weight_decay),
        config=ds_config,
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, schedule),
    )
    if world == 1 and cfg.zero_stage == 0:
        engine.enable_backward_allreduce = False  # nothing to average; skips flatten/copy of all gradients
    return engine


def load_checkpoint(engine: Any, root: str, tag: str) -> dict[str, Any] | None:
    """``engine.load_checkpoint`` with optimizer and scheduler states; returns the client state (None: not loaded).

    Two defects of DeepSpeed 0.19's ZeRO-3 universal-checkpoint loader are undone here (found as a ~1e-3
    drift of a run resumed on another process count; ZeRO-2 resumed within 1e-5):
    - it copies the hyper-parameters of the *first* parameter group into every group, which puts weight decay
      on the norm gains (the no-decay group); the per-group values are the engine's own, so they are kept;
    - it gives every parameter sub-group the *same* ``step`` tensor, which AdamW increments in place once per
      sub-group, so bias correction runs ahead; each state gets its own copy.
    """
    weight_decay = [group.get("weight_decay") for group in engine.optimizer.param_groups]
    _, client = engine.load_checkpoint(root, tag=tag, load_optimizer_states=True, load_lr_scheduler_states=True)
    for group, decay in zip(engine.optimizer.param_groups, weight_decay, strict=True):
        group["weight_decay"] = decay
    base = getattr(engine.optimizer, "optimizer", engine.optimizer)  # ZeRO wraps the torch optimizer
    seen: set[int] = set()
    for state in base.state.values():
        step = state.get("step")
        if isinstance(step, torch.Tensor):
            if id(step) in seen:
                state["step"] = step.clone()
            seen.add(id(step))
    return client


def discard_gradients(engine: Any, accumulation_steps: int) -> None:
    """Drop a half-accumulated step: every gradient buffer is emptied and the engine is at a step boundary.

    ``engine.zero_grad()`` alone is not enough: it only clears the module's ``.grad``s, while ZeRO keeps the
    reduced gradients of earlier micro-batches in its own accumulators (stage 1/2: ``all_grad_tensors``;
    stage 3: the partitioned gradient buffers, added to while its micro-step counter is past 0; both: the
    CPU-offload buffers). This is what DeepSpeed does itself when an fp16 step overflows.
    """
    from deepspeed.runtime.zero.stage3 import DeepSpeedZeroOptimizer_Stage3
    from deepspeed.runtime.zero.stage_1_and_2 import INITIAL_MICRO_STEP_ID, DeepSpeedZeroOptimizer

    engine.zero_grad()
    opt = engine.optimizer
    if isinstance(opt, DeepSpeedZeroOptimizer):
        opt.zero_grad(set_to_none=True)
        opt._release_preflattened_grad_buffers()
        if opt.cpu_offload:
            opt.reset_cpu_buffers()
        for group in list(opt.all_grad_tensors):
            opt.all_grad_tensors[group] = None
        for group in list(opt.averaged_gradients):
            opt.averaged_gradients[group] = None
        opt.micro_step_id = INITIAL_MICRO_STEP_ID
    elif isinstance(opt, DeepSpeedZeroOptimizer_Stage3):
        opt.zero_grad(set_to_none=True)  # also restarts its micro-step count: the next backward copies
        if opt.offload_optimizer:
            opt.reset_cpu_buffers()
        else:
            opt.averaged_gradients = {}
    engine.micro_steps = engine.global_steps * accumulation_steps
