"""An imported model's own tokenizer, recorded as a tokenizer version (the dataset stage owns tokenizer choice).

Nothing is retrained: the file is stored as is under ``tokenizers/<version>/tokenizer.json``, and the record's
``trained_on`` says where it came from, its special tokens and its chat template. The same file imported again
(same sha256) is the same tokenizer version.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from lmforge_core.metadata import repository as repo
from lmforge_core.metadata.models import TokenizerVersion
from lmforge_core.runtime import Runtime
from model.tokenizer import IMPORTED, TokenizerRef, load_recorded, make_ref, store_tokenizer

RECORDED = ("bos_token", "eos_token", "pad_token", "chat_template")


def register_imported_tokenizer(runtime: Runtime, path: Path, record: dict[str, Any], source: str) -> TokenizerRef:
    """The tokenizer version of the tokenizer file ``path`` imported with a model from ``source``; ``record``
    is what import read about it (special tokens, chat template)."""
    cfg = runtime.settings.data.tokenizer
    tokenizer = Tokenizer.from_file(str(path))
    provenance = {IMPORTED: source} | {key: record.get(key) for key in RECORDED}
    with runtime.metadata.session() as session:
        ref = make_ref(tokenizer, "pending", cfg, imported=provenance)  # checks the special tokens first
        existing = repo.find_tokenizer_version(session, ref.sha256)
        if existing is not None and IMPORTED in (existing.trained_on or {}):
            return load_recorded(runtime.artifacts, existing, cfg)
        label = repo.next_sequence_label(session, TokenizerVersion, "tok")
        ref = make_ref(tokenizer, label, cfg, imported=provenance)
        store_tokenizer(runtime.artifacts, ref)
        ref.record_id = repo.add_tokenizer_version(
            session, version=label, artifact_key=ref.key, sha256=ref.sha256, vocab_size=ref.vocab_size,
            trained_on=provenance).id
    return ref
