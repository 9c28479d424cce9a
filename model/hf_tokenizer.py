"""The tokenizer files of a Hugging Face folder: ``tokenizer.json`` (the `tokenizers` file as is) and
``tokenizer_config.json`` (special tokens, model max length), so that ``AutoTokenizer``,
``pipeline("text-generation")`` and converters such as CTranslate2's load the folder on their own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from lmforge_core.fileio import atomic_write, sha256_file
from model.tokenizer import TokenizerRef
from model.weights import WeightsError

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
ROLES = ("bos", "eos", "pad")


def special_ids(ref: TokenizerRef) -> dict[str, int]:
    return {"bos_id": ref.bos_id, "eos_id": ref.eos_id, "pad_id": ref.pad_id}


def write_hf_tokenizer(ref: TokenizerRef, out_dir: Path, max_length: int) -> None:
    """Write the three tokenizer files. No BOS/EOS is added on encode: our packing adds none to a
    document's tokens (documents are joined with EOS), so ``tokenizer(text)`` equals our ``encode``."""
    tokens = {role: ref.tokenizer.id_to_token(getattr(ref, f"{role}_id")) for role in ROLES}
    special = {f"{role}_token": token for role, token in tokens.items()}
    config = special | {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": max_length,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "padding_side": "left",  # batched generation pads on the left
        "lmforge_tokenizer_version": ref.version,
    }
    atomic_write(out_dir / TOKENIZER_FILE, ref.tokenizer.to_str())
    atomic_write(out_dir / TOKENIZER_CONFIG, json.dumps(config, indent=2))
    atomic_write(out_dir / SPECIAL_TOKENS_MAP, json.dumps(special, indent=2))


def read_hf_tokenizer(hf_dir: Path, hf_cfg: dict[str, Any], vocab_size: int) -> dict[str, Any] | None:
    """Check a folder's tokenizer files against its ``config.json``; returns what import records
    (file sha256, special tokens and ids), or None when the folder has no ``tokenizer.json``."""
    path = Path(hf_dir) / TOKENIZER_FILE
    if not path.is_file():
        return None
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # the tokenizers library raises a bare Exception on a malformed file
        raise WeightsError(f"{path} is not a valid tokenizers file: {exc}") from exc
    if tokenizer.get_vocab_size() > vocab_size:
        raise WeightsError(f"{path} has {tokenizer.get_vocab_size()} tokens but the model only {vocab_size}")
    cfg_path = Path(hf_dir) / TOKENIZER_CONFIG
    tok_cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    out: dict[str, Any] = {"file": TOKENIZER_FILE, "sha256": sha256_file(path)}
    for role in ROLES:
        token = tok_cfg.get(f"{role}_token")
        token = token.get("content") if isinstance(token, dict) else token
        token_id = tokenizer.token_to_id(token) if token else hf_cfg.get(f"{role}_token_id")
        declared = hf_cfg.get(f"{role}_token_id")
        if token and token_id is None:
            raise WeightsError(f"{cfg_path}: {role}_token {token!r} is not in {path.name}")
        if token and declared is not None and declared != token_id:
            raise WeightsError(f"{hf_dir}/config.json: {role}_token_id {declared} but {cfg_path.name}'s "
                               f"{role}_token {token!r} is id {token_id}")
        out[f"{role}_token"], out[f"{role}_id"] = token, token_id
    return out
