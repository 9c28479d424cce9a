"""Settings section for model training (``LMFORGE_TRAIN__*``)."""

from typing import Literal

from pydantic import BaseModel, Field, model_validator

# The Hugging Face Llama projections a LoRA adapter can target (model/adapters.py maps them onto our network).
LoraTarget = Literal["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class TrainConfig(BaseModel):
    """Training defaults; every field has a default so nothing is required."""

    network: str = Field("tiny", description="named model shape (model/configs.py)")
    steps: int = Field(200, ge=1, description="optimizer steps in one run")
    global_batch: int = Field(8, ge=1, description="sequences per optimizer step, over all processes")
    micro_batch: int = Field(8, ge=1, description="sequences per process per forward/backward")
    lr: float = Field(3e-4, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine floor as a fraction of lr")
    warmup_steps: int = Field(20, ge=0, description="linear warmup of a run from scratch")
    rewarm_steps: int = Field(20, ge=0, description="linear re-warming when continuing a trained model")
    rewarm_lr_ratio: float = Field(0.5, gt=0, le=1, description="peak lr of a continued run, times lr")
    restart_every: int | None = Field(None, ge=1, description="cosine restarts every N steps (None: one cycle)")
    weight_decay: float = Field(0.1, ge=0)
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = Field(1.0, ge=0, description="0 disables clipping")
    zero_stage: int = Field(0, ge=0, le=3)
    offload_optimizer: bool = False
    offload_params: bool = False
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    seed: int = 1234
    threads: int | None = Field(None, ge=1, description="torch threads per process (fixed for determinism)")
    processes: int = Field(1, ge=1)
    launcher: Literal["torchrun", "deepspeed"] = "torchrun"
    hostfile: str | None = Field(
        None, description="DeepSpeed hostfile (`HOST slots=N` lines): train on every host it names, `processes` "
                          "per host; needs launcher deepspeed (checked when training starts: model/launch.py)")
    replay_fraction: float = Field(0.25, ge=0, lt=1)
    replay_planner: Literal["fixed", "drift"] = Field(
        "fixed", description="fixed: replay_fraction and rewarm_lr_ratio as set; drift: both follow the new "
                             "data's measured drift (tasks/train/replay_plan.py) within the bounds below")
    replay_fraction_bounds: tuple[float, float] = Field((0.1, 0.5), description="drift planner: low/high drift")
    rewarm_lr_ratio_bounds: tuple[float, float] = Field((0.3, 1.0), description="drift planner: low/high drift")
    drift_reference: float = Field(0.25, gt=0, le=1, description="token JS divergence that plans the high bounds")
    regularization: Literal["none", "l2", "ewc"] = "none"
    reg_strength: float = Field(0.01, ge=0)
    ewc_batches: int = Field(8, ge=1, description="batches of earlier data used to estimate the Fisher")
    checkpoint_every: int = Field(50, ge=1)
    keep_checkpoints: int = Field(3, ge=1)
    spike_factor: float = Field(4.0, gt=1, description="a loss above factor x moving average is a spike")
    spike_window: int = Field(20, ge=2)
    rollback_after: int = Field(3, ge=1, description="consecutive spikes that trigger a rollback")
    max_rollbacks: int = Field(3, ge=0)
    metrics_flush_every: int = Field(10, ge=1, description="steps per batch of metrics written to the store")
    dropout: float = Field(0.0, ge=0, lt=1, description="training option, not part of the model's shape")
    activation_checkpointing: bool = Field(False, description="recompute each block in backward (less memory)")
    fused_ops: Literal["auto", "off"] = Field(
        "auto", description="auto: hand-written CPU backward passes (model/fused_ops.py); off: the plain ops")
    peak_flops: float | None = Field(None, gt=0, description="MFU denominator; None: measured once and cached")
    method: Literal["full", "lora"] = Field(
        "full", description="full: train every weight; lora: freeze the base and train PEFT LoRA adapters, merged "
                            "into the new version's weights (the adapter is kept beside them)")
    lora_rank: int = Field(8, ge=1, description="LoRA rank r")
    lora_alpha: float = Field(16.0, gt=0, description="LoRA alpha: the update is scaled by alpha / r")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the LoRA branch's input")
    lora_targets: list[LoraTarget] = Field(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], min_length=1,
        description="projections that get adapters, by their Hugging Face Llama names")

    @model_validator(mode="after")
    def _batch_fits(self) -> "TrainConfig":
        if self.global_batch % self.micro_batch:
            raise ValueError(f"global_batch {self.global_batch} is not a multiple of micro_batch {self.micro_batch}")
        return self

    @model_validator(mode="after")
    def _hostfile_needs_deepspeed(self) -> "TrainConfig":
        if self.hostfile is not None and self.launcher != "deepspeed":
            raise ValueError(f"train.hostfile is set but train.launcher is {self.launcher!r}: only the deepspeed "
                             "launcher reads a hostfile (set train.launcher = \"deepspeed\")")
        return self

    @model_validator(mode="after")
    def _lora_fits(self) -> "TrainConfig":
        if self.method != "lora":
            return self
        if self.zero_stage == 3:
            raise ValueError("train.method lora runs under ZeRO stages 0-2: stage 3 partitions the frozen base "
                             "weights the adapters are merged into; set train.zero_stage <= 2")
        if self.regularization != "none":
            raise ValueError(f"train.regularization {self.regularization!r} anchors every weight and applies to "
                             "full fine-tuning; LoRA keeps the base frozen: set it to 'none'")
        return self

    @model_validator(mode="after")
    def _bounds_ordered(self) -> "TrainConfig":
        low, high = self.replay_fraction_bounds
        if not 0 <= low <= high < 1:
            raise ValueError(f"replay_fraction_bounds {self.replay_fraction_bounds} must satisfy 0 <= low <= high < 1")
        low, high = self.rewarm_lr_ratio_bounds
        if not 0 < low <= high <= 1:
            raise ValueError(f"rewarm_lr_ratio_bounds {self.rewarm_lr_ratio_bounds} must satisfy 0 < low <= high <= 1")
        return self
