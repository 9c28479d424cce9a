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
CHAT_TEMPLATE_FILE = "chat_template.jinja"
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
    } | ({"chat_template": ref.chat_template} if ref.chat_template else {})
    atomic_write(out_dir / TOKENIZER_FILE, ref.tokenizer.to_str())
    atomic_write(out_dir / TOKENIZER_CONFIG, json.dumps(config, indent=2))
    atomic_write(out_dir / SPECIAL_TOKENS_MAP, json.dumps(special, indent=2))


def _chat_template(hf_dir: Path, tok_cfg: dict[str, Any]) -> str | None:
    """The folder's chat template: ``chat_template.jinja`` (transformers >= 4.47 saves it apart) or the
    ``chat_template`` of ``tokenizer_config.json`` (a string, or a list of named templates: the default)."""
    jinja = hf_dir / CHAT_TEMPLATE_FILE
    if jinja.is_file():
        return jinja.read_text()
    template = tok_cfg.get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return template if isinstance(template, str) else None


def tokenizer_record(tokenizer: Tokenizer, path: Path, special: dict[str, str | None],
                     declared: dict[str, int | None], chat_template: str | None) -> dict[str, Any]:
    """What import records of a model's tokenizer: file sha256, each role's token and id (a role without a
    token takes the config's id), the chat template. A token the config gives another id is refused."""
    out: dict[str, Any] = {"file": TOKENIZER_FILE, "sha256": sha256_file(path), "chat_template": chat_template}
    for role in ROLES:
        token, want = special.get(role), declared.get(role)
        if isinstance(want, list):  # several end ids (Llama 3): the role's token must be one of them
            want = tokenizer.token_to_id(token) if token and tokenizer.token_to_id(token) in want else want[0]
        token_id = tokenizer.token_to_id(token) if token else want
        if token and token_id is None:
            raise WeightsError(f"{path}: {role} token {token!r} is not in its vocabulary")
        if token and want is not None and want != token_id:
            raise WeightsError(f"{path.parent}: {role}_token_id {want} in config.json but {role} token "
                               f"{token!r} is id {token_id}")
        if token is None and token_id is not None:
            token = tokenizer.id_to_token(token_id)
        out[f"{role}_token"], out[f"{role}_id"] = token, token_id
    return out


def read_hf_tokenizer(hf_dir: Path, hf_cfg: dict[str, Any], vocab_size: int) -> dict[str, Any] | None:
    """Check a folder's tokenizer files against its ``config.json``; returns what import records
    (see `tokenizer_record`), or None when the folder has no ``tokenizer.json``."""
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
    special = {}
    for role in ROLES:
        token = tok_cfg.get(f"{role}_token")
        special[role] = token.get("content") if isinstance(token, dict) else token
    declared = {role: hf_cfg.get(f"{role}_token_id") for role in ROLES}
    return tokenizer_record(tokenizer, path, special, declared, _chat_template(Path(hf_dir), tok_cfg))
