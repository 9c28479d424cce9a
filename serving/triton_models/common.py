"""What the python-backend models share: their place in the repository, config parameters and the
tokenizer of their version (torch-free: the tokenizer model's stub starts without it)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge_core.config.data import TokenizerConfig
from model.tokenizer import TokenizerRef, make_ref

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_META = "tokenizer_meta.json"
# how often a running stream's cancellation is asked for: in Triton each ask is a round trip to the server
# process; asked for every slot at every step, the asks took more of the scheduler thread (16 slots) than
# the decode step did. A cancelled stream so runs on for at most this long.
CANCEL_POLL_S = 0.1
# request parameters of ``generate`` between the models: a caller's name for its stream, and a control
# request that cancels the stream of that name (how ``generate_text`` cancels its BLS stream)
STREAM_KEY, CANCEL_KEY = "lmforge_stream", "lmforge_cancel"


@dataclass
class ModelArgs:
    """The ``args`` Triton passes to ``initialize``, read once."""

    name: str
    version: int
    directory: Path  # this model's version folder: everything the model reads lies in it
    parameters: dict[str, str]

    @classmethod
    def parse(cls, args: dict[str, Any]) -> ModelArgs:
        # ``model_repository`` is the model's own folder: on a cloud repository (s3://) Triton downloads each
        # model into a temporary folder of its own, so a model can never reach into a sibling model's folder
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        version = int(args["model_version"])
        return cls(args["model_name"], version, Path(args["model_repository"]) / str(version), params)

    def int_param(self, key: str, default: int) -> int:
        return int(self.parameters.get(key) or default)


def load_version_tokenizer(directory: Path) -> TokenizerRef:
    from tokenizers import Tokenizer

    meta = json.loads((directory / TOKENIZER_META).read_text())
    cfg = TokenizerConfig(vocab_size=meta["vocab_size"], bos=meta["bos"], eos=meta["eos"], pad=meta["pad"])
    return make_ref(Tokenizer.from_file(str(directory / TOKENIZER_FILE)), meta["version"], cfg)
