"""Settings section for serving (``LMFORGE_SERVING__*``): the Triton repository and the generate model."""

from pydantic import BaseModel, Field

DEFAULT_SMOKE_PROMPTS = (
    "The purpose of this document is",
    "Return a string representation of",
    "In the following section we describe",
)


class ServingConfig(BaseModel):
    """Where the model repository lives and how the served model behaves; every field has a default."""

    repository: str = Field("", description="Triton model repository: a folder or s3://bucket/prefix (read by Triton itself); empty means <workspace>/triton/repository")
    triton_grpc_url: str = Field("", description="host:port of a serving Triton; empty means the local `lmforge triton up` server")
    max_slots: int = Field(8, ge=1, le=256, description="continuous-batching slots of the generate model")
    max_tokens_limit: int = Field(256, ge=1, description="largest max_tokens a request may ask for")
    decode_backend: str = Field("inprocess", pattern="^(inprocess|bls)$", description="decode step: in-process onnxruntime or BLS to lm")
    threads: int = Field(1, ge=1, description="onnxruntime intra-op threads per session in the server")
    onnx_tolerance: float = Field(1e-3, gt=0, description="largest logit difference an ONNX export may have vs PyTorch")
    smoke_prompts: list[str] = Field(default_factory=lambda: list(DEFAULT_SMOKE_PROMPTS), min_length=1)
    verify_max_tokens: int = Field(16, ge=1, description="greedy tokens compared per smoke prompt")
    alias: str = Field("serving", description="model alias that records what the server serves")
