"""The language model library: network, weights, HF interop, DeepSpeed engine, data, train loop.

May import torch, deepspeed, safetensors, numpy and ``lmforge_core``; never Prefect, ``tasks`` or ``flows``.
"""
