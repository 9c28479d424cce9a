"""A tiny model trained on real text with a real BPE tokenizer, registered in a real workspace.

The decoding CLI, the Hugging Face export (tokenizer files) and the lm-eval adapter need a model version
whose dataset has a tokenizer; the synthetic datasets of ``helpers`` have none.
"""

from __future__ import annotations

import pydoc
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from helpers import WINDOW, write_dataset

from lmforge_core.config.data import TokenizerConfig
from lmforge_core.metadata import repository as repo
from lmforge_core.runtime import Runtime, open_runtime
from lmforge_core.settings import load_settings
from model.tokenizer import TokenizerRef, make_ref, store_tokenizer, train_bpe
from model.weights import sha256_file
from tasks.train.run import run_training

TOKENIZER = TokenizerConfig(vocab_size=384, min_frequency=2)
TRAIN = {"network": "tiny", "steps": 6, "global_batch": 8, "micro_batch": 8, "checkpoint_every": 6,
         "keep_checkpoints": 1, "threads": 1, "warmup_steps": 1, "lr": 3e-3, "metrics_flush_every": 3}


@dataclass
class TextModel:
    runtime: Runtime
    tokenizer: TokenizerRef
    label: str
    texts: list[str]


def documents() -> list[str]:
    """Real English text already on the machine: the standard library's documentation."""
    import collections
    import json
    import textwrap

    text = "\n".join(pydoc.render_doc(m, renderer=pydoc.plaintext) for m in (json, textwrap, collections))
    return [p.strip() for p in text.split("\n\n") if len(p.strip()) > 40]


def pack(tokenizer: TokenizerRef, texts: list[str]) -> np.ndarray:
    stream: list[int] = []
    for ids in tokenizer.encode_batch(texts):
        stream += [*ids, tokenizer.eos_id]
    n = len(stream) // WINDOW
    return np.array(stream[: n * WINDOW], dtype=np.int64).reshape(n, WINDOW)


def train_text_model(root: Path) -> TextModel:
    runtime = open_runtime(load_settings(workspace=root / "ws", train=TRAIN,
                                         data={"tokenizer": TOKENIZER.model_dump()}))
    texts = documents()
    tokenizer = make_ref(train_bpe(texts, TOKENIZER), "tok-000001", TOKENIZER)
    store_tokenizer(runtime.artifacts, tokenizer)
    staging = root / "staging"
    manifest = write_dataset(staging, "ds-000001", pack(tokenizer, texts[: len(texts) * 3 // 4]),
                             pad_id=tokenizer.pad_id, tokenizer=tokenizer.manifest_entry())
    keys = ["datasets/ds-000001/manifest.json"] + [s["key"] for s in manifest["splits"]["train"]]
    for key in keys:
        runtime.artifacts.put_file(key, staging / key)
    with runtime.metadata.session() as session:
        record = repo.add_tokenizer_version(session, version=tokenizer.version, artifact_key=tokenizer.key,
                                            sha256=tokenizer.sha256, vocab_size=tokenizer.vocab_size)
        tokenizer.record_id = record.id
        repo.create_dataset_version(
            session, version="ds-000001", manifest_key=keys[0], manifest_sha256=sha256_file(staging / keys[0]),
            tokenizer_id=record.id, train_tokens=manifest["num_tokens"]["train"], validation_tokens=0,
            documents=len(texts), batch_ids=[])
    result = run_training(runtime, source="scratch")
    return TextModel(runtime, tokenizer, result.model_version or "", texts)
