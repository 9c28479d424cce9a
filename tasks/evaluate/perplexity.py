"""Perplexity of a model on the validation split of every dataset version, and forgetting.

Each dataset version's validation split is fetched (sha256-verified) into the workspace cache and
streamed from its memory-mapped shards by the format's one reader (`model.token_shards.TokenWindows`).
Ingestion makes one dataset version per source drop, so a version's row is also its source's slice:
rows ``(ds, perplexity, all)`` and ``(ds, perplexity, source:<drop>)``. Forgetting is the relative
perplexity change against the parent model on the earlier versions.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from lmforge_core.config.evaluate import EvaluateConfig
from lmforge_core.metadata import repository as repo
from lmforge_core.metadata.evaluation_repository import EvaluationRow
from lmforge_core.runtime import Runtime
from model.eval_metrics import perplexity, relative_change
from model.network import Transformer
from model.scoring import split_nll
from model.token_shards import DataError, TokenWindows, load_manifest
from tasks.train.run import fetch_dataset

Emit = Callable[..., None]


def dataset_sources(runtime: Runtime) -> dict[str, list[str]]:
    """Every dataset version, oldest first, with the source drops its batches read (shard folders)."""
    out: dict[str, list[str]] = {}
    with runtime.metadata.session() as session:
        for ds in repo.list_dataset_versions(session):
            drops = {PurePosixPath(shard.uri).parent.name or shard.uri
                     for link in ds.lineage for shard in link.batch.shards}
            out[ds.version] = sorted(drops)
    return out


def validation_split(runtime: Runtime, version: str) -> TokenWindows:
    cache = runtime.settings.workspace / "cache"
    fetch_dataset(runtime, version, cache, splits=("validation",))
    return TokenWindows(load_manifest(cache, version), Path(cache), split="validation")


def split_perplexity(model: Transformer, split: TokenWindows, cfg: EvaluateConfig, emit: Emit) -> dict[str, Any]:
    if not len(split):
        raise DataError(f"dataset {split.dataset_version} has an empty validation split; nothing to evaluate on")
    total = split_nll(model, split, batch_windows=cfg.batch_windows, max_windows=cfg.max_windows,
                      on_batch=lambda done, of: emit("perplexity_batch", dataset=split.dataset_version,
                                                     done=done, total=of))
    return {"perplexity": perplexity(total.nll_sum, total.tokens), "nll_sum": total.nll_sum,
            "tokens": total.tokens, "windows": min(len(split), cfg.max_windows or len(split))}


def perplexities(runtime: Runtime, model: Transformer, versions: list[str], cfg: EvaluateConfig,
                 emit: Emit, tokenizer_version: str | None = None) -> dict[str, dict[str, Any]]:
    """``{dataset version: {perplexity, nll_sum, tokens, windows}}`` over ``versions``. A version tokenized
    by another tokenizer than ``tokenizer_version`` is skipped (its ids mean other words) with an event."""
    out = {}
    for version in versions:
        split = validation_split(runtime, version)
        if tokenizer_version and split.tokenizer_version and split.tokenizer_version != tokenizer_version:
            emit("perplexity_skipped", dataset=version, reason=f"tokenized by {split.tokenizer_version}, "
                 f"the model uses {tokenizer_version}")
            continue
        if split.vocab_size and split.vocab_size > model.config.vocab_size:
            raise DataError(f"{version} uses a vocabulary of {split.vocab_size} tokens; the model has "
                            f"{model.config.vocab_size}")
        out[version] = split_perplexity(model, split, cfg, emit)
        emit("perplexity", dataset=version, **out[version])
    return out


def perplexity_rows(results: dict[str, dict[str, Any]], sources: dict[str, list[str]]) -> list[EvaluationRow]:
    rows = []
    for version, r in results.items():
        details = {k: r[k] for k in ("nll_sum", "tokens", "windows")} | {"sources": sources.get(version, [])}
        rows.append(EvaluationRow(version, "perplexity", r["perplexity"], "all", details))
        if len(sources.get(version, [])) == 1:
            rows.append(EvaluationRow(version, "perplexity", r["perplexity"], f"source:{sources[version][0]}",
                                      details))
    return rows


def forgetting_rows(cand: dict[str, float], parent: dict[str, float], newest: str,
                    parent_label: str) -> list[EvaluationRow]:
    """Relative perplexity change against the parent on every earlier dataset version both were scored on."""
    return [EvaluationRow(d, "forgetting", relative_change(cand[d], parent[d]), "all",
                          {"parent": parent_label, "perplexity": cand[d], "parent_perplexity": parent[d]})
            for d in cand if d != newest and d in parent]
