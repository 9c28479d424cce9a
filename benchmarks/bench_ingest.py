"""Ingest throughput and dedup quality: lmforge's whole ingest path next to datatrove's MinHash dedup.

Usage (from the repository root):
    .venv/bin/python benchmarks/bench_ingest.py                 # 50,000 documents
    .venv/bin/python benchmarks/bench_ingest.py --docs 5000     # quick run
    .venv/bin/python benchmarks/bench_ingest.py --graded-only   # only the graded-edit near-duplicate table

First, the graded-edit table (`graded_corpus.py`): edited copies of real documents (word substitutions at
1-40%, replaced spans at 5-50%, appended text at 10-30%, excerpts, formatting-only changes) and unrelated
controls; per edit kind and level, the share removed by datatrove's default MinHash, by lmforge's dedup with
the settings it had before the graded calibration, and with today's defaults (`--graded-sweep` adds variants).

What runs, on one generated corpus (JSONL shards of ~300-word documents with injected exact and near
duplicates; the ground truth is kept by the generator):
- lmforge: `run_ingest` over the corpus (read, clean, filter, PII, exact + MinHash-LSH dedup, GX
  gate, tokenize and pack into a dataset version, all records written), with a tokenizer trained
  beforehand on 2,000 documents (training is timed and reported apart, as it happens once);
- datatrove: its 4-stage MinHash deduplication (signatures, buckets, clusters, filter) with its
  default config (5-grams, 14 buckets x 8 hashes), 2 tasks on the 2 cores, in a separate virtual
  environment (`.venv-bench`, `--datatrove-python`): datatrove pulls numpy 2, which the project's
  venv must not have (numpy < 2 for the Triton python backend).
Both dedups are scored against the injected ground truth: precision = removed duplicates / removed,
recall = removed duplicates / injected duplicates. Peak memory is the maximum RSS of each side
sampled with psutil (main process, largest worker, and all processes together). For lmforge the main
process's peak is decomposed: baseline (RSS just before the run, code and libraries imported), the
in-memory dedup index at the end of the run (`DedupIndex.memory_bytes`), and the rest, which is what
must stay flat as the corpus grows (everything per document is spooled to disk).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARDS = 10


class PeakMemory:
    """Samples the RSS of a process and of each of its descendants every 0.1 s (psutil).

    `ru_maxrss` cannot be used for child processes here: Linux keeps the high-water mark across
    execve, so a spawned worker or a subprocess would report its parent's peak.
    """

    def __init__(self, pid: int | None = None) -> None:
        import threading

        import psutil

        self._psutil = psutil
        self._root = psutil.Process(pid or os.getpid())
        self.main_mb = self.child_mb = self.total_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                main = self._root.memory_info().rss / 2**20
                children = []
                for child in self._root.children(recursive=True):
                    try:
                        children.append(child.memory_info().rss / 2**20)
                    except self._psutil.Error:
                        continue
            except self._psutil.Error:
                return
            self.main_mb = max(self.main_mb, main)
            self.child_mb = max([self.child_mb, *children])
            self.total_mb = max(self.total_mb, main + sum(children))

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------- corpus -----------------------------
def _vocabulary(rng: random.Random, size: int) -> list[str]:
    onsets = ["b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "st", "tr", "pl", "gr"]
    vowels = ["a", "e", "i", "o", "u", "ai", "ea", "ou"]
    codas = ["", "n", "r", "s", "t", "l", "nd", "st", "ck"]
    words: set[str] = set()
    while len(words) < size:
        syllables = rng.choice((1, 2, 2, 3))
        words.add("".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas) for _ in range(syllables)))
    return sorted(words)


def generate_corpus(out: Path, docs: int, words: int, exact_frac: float, near_frac: float, seed: int) -> dict:
    """Write `docs` documents into SHARDS JSONL files; return the ground truth of injected duplicates."""
    import numpy as np

    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    vocab = np.array(_vocabulary(rng, 30_000))
    weights = 1.0 / np.arange(10, len(vocab) + 10) ** 1.05
    cdf = np.cumsum(weights) / weights.sum()
    reservoir: list[tuple[str, str]] = []  # (id, text) of recent original documents
    truth: dict[str, tuple[str, str]] = {}  # duplicate id -> ("exact" | "near", id of its original)
    near_jaccard: list[float] = []
    out.mkdir(parents=True, exist_ok=True)
    handles = [(out / f"part-{i:05d}.jsonl").open("w") for i in range(SHARDS)]

    def base_text() -> str:
        n = max(60, int(nrng.normal(words, words * 0.2)))
        tokens = vocab[np.searchsorted(cdf, nrng.random(n))].tolist()
        sentences, i = [], 0
        while i < n:
            k = rng.randint(6, 20)
            sentences.append(" ".join(tokens[i : i + k]).capitalize() + ".")
            i += k
        if rng.random() < 0.05:
            sentences.insert(rng.randrange(len(sentences)), f"Write to {rng.choice(vocab)}.{rng.choice(vocab)}@example.com.")
        if rng.random() < 0.03:
            sentences.insert(rng.randrange(len(sentences)), f"Call +1 (555) {rng.randint(200, 999)}-{rng.randint(1000, 9999)}.")
        return "\n\n".join(" ".join(sentences[j : j + 5]) for j in range(0, len(sentences), 5))

    def shingles(text: str) -> set[tuple[str, ...]]:
        ws = [w.strip(".,").lower() for w in text.split()]
        return set(zip(*(ws[i:] for i in range(5)), strict=False))

    for i in range(docs):
        doc_id = f"doc-{i:07d}"
        roll = rng.random()
        if reservoir and roll < exact_frac:
            root, text = rng.choice(reservoir)
            truth[doc_id] = ("exact", root)
        elif reservoir and roll < exact_frac + near_frac:
            root, original = rng.choice(reservoir)
            ws = original.split(" ")
            for _ in range(rng.randint(1, max(1, min(3, len(ws) // 100)))):  # ~1% of words edited
                ws[rng.randrange(len(ws))] = str(rng.choice(vocab))
            text = " ".join(ws)
            truth[doc_id] = ("near", root)
            if len(near_jaccard) < 2000:
                a, b = shingles(original), shingles(text)
                near_jaccard.append(len(a & b) / len(a | b))
        else:
            text = base_text()
            if len(reservoir) < 2000:
                reservoir.append((doc_id, text))
            else:
                reservoir[rng.randrange(len(reservoir))] = (doc_id, text)
        handles[i % SHARDS].write(json.dumps({"id": doc_id, "text": text, "source": "bench"}) + "\n")
    for h in handles:
        h.close()
    near_jaccard.sort()
    return {
        "truth": truth,
        "near_jaccard_min": near_jaccard[0] if near_jaccard else None,
        "near_jaccard_median": near_jaccard[len(near_jaccard) // 2] if near_jaccard else None,
    }


def score(removed: set[str], truth: dict[str, tuple[str, str]], excluded: set[str]) -> dict:
    """Precision/recall of a dedup against the injected clusters (an original and its copies).

    Shards are read in file order, so a copy may be met before its original: what is right is to
    keep exactly one member of each cluster, whichever it is. True positives: per cluster, the removed
    members up to size - 1; everything else removed is a false positive. Documents in `excluded`
    (rejected by quality filters before dedup) leave their clusters.
    """
    clusters: dict[str, set[str]] = {}
    kinds: dict[str, str] = {}
    for dup, (kind, root) in truth.items():
        clusters.setdefault(root, {root}).add(dup)
        kinds[dup] = kind
    removed = removed - excluded
    tp = expected = 0
    by_kind = {"exact": [0, 0], "near": [0, 0]}
    for members in clusters.values():
        members = members - excluded
        if len(members) < 2:
            continue
        hit = len(removed & members)
        tp += min(hit, len(members) - 1)
        expected += len(members) - 1
        kept = members - removed
        for dup in members & kinds.keys():
            # a copy is handled when removed, or when it is the cluster's one survivor (its original went)
            by_kind[kinds[dup]][0] += dup in removed or kept == {dup}
            by_kind[kinds[dup]][1] += 1
    return {
        "removed": len(removed),
        "expected_removals": expected,
        "precision": tp / len(removed) if removed else 1.0,
        "recall": tp / expected if expected else 1.0,
        "recall_exact": by_kind["exact"][0] / by_kind["exact"][1] if by_kind["exact"][1] else 1.0,
        "recall_near": by_kind["near"][0] / by_kind["near"][1] if by_kind["near"][1] else 1.0,
    }


# ---------------------------------------------------------------- lmforge ----------------------------
def run_lmforge(corpus: Path, work: Path, docs: int) -> dict:
    from lmforge_core.runtime import open_runtime
    from lmforge_core.settings import load_settings
    from model.tokenizer import make_ref, store_tokenizer, train_bpe
    from tasks.dedup import DedupStore
    from tasks.ingest.pipeline import run_ingest

    settings = load_settings(workspace=work / "ws", database_url="", artifact_uri="")
    rt = open_runtime(settings)
    # a tokenizer exists before the timed run, as on every night but the first.
    t0 = time.perf_counter()
    with (corpus / "part-00000.jsonl").open() as handle:
        sample = [json.loads(line)["text"] for _, line in zip(range(2000), handle, strict=False)]
    ref = make_ref(train_bpe(sample, settings.data.tokenizer), "tok-000001", settings.data.tokenizer)
    store_tokenizer(rt.artifacts, ref)
    from lmforge_core.metadata import repository as repo

    with rt.metadata.session() as session:
        repo.add_tokenizer_version(session, version=ref.version, artifact_key=ref.key, sha256=ref.sha256,
                                   vocab_size=ref.vocab_size, trained_on={"benchmark_sample": len(sample)})
    tokenizer_s = time.perf_counter() - t0

    import great_expectations  # noqa: F401  (imported by the gate: its code belongs in the baseline, not the rest)
    import psutil

    baseline_mb = psutil.Process().memory_info().rss / 2**20
    t0 = time.perf_counter()
    with PeakMemory() as peak:
        result = run_ingest(rt, str(corpus))
    elapsed = time.perf_counter() - t0
    index = DedupStore(rt.artifacts, settings.data.dedup).load(lambda _: True)
    index_mb, index_entries = index.memory_bytes() / 2**20, len(index)
    del index
    removed: set[str] = set()
    filtered: set[str] = set()
    for key in result.quarantine_keys:
        if not key.endswith("rejected.jsonl.gz"):
            continue
        for line in gzip.decompress(rt.artifacts.get_bytes(key)).splitlines():
            entry = json.loads(line)
            if entry["reason"] in ("exact_duplicate", "near_duplicate"):
                removed.add(entry["id"])
            else:
                filtered.add(entry["id"])
    index_bytes = rt.artifacts.info("dedup/snapshot.npz").size if rt.artifacts.exists("dedup/snapshot.npz") else 0
    rt.metadata.dispose()
    return {
        "status": result.status,
        "gate_success": result.gate["success"] if result.gate else None,
        "seconds": elapsed,
        "docs_per_s": docs / elapsed,
        "accepted": result.records_accepted,
        "rejected": result.rejected,
        "tokens": result.dataset["num_tokens"] if result.dataset else None,
        "stage_seconds": {k: round(v, 2) for k, v in result.timings.items()},
        "tokenizer_training_s": tokenizer_s,
        "peak_rss_mb_main": peak.main_mb,
        "peak_rss_mb_worker": peak.child_mb,
        "peak_rss_mb_total": peak.total_mb,
        "baseline_rss_mb": baseline_mb,
        "dedup_index_mb": index_mb,
        "dedup_index_entries": index_entries,
        "peak_rss_mb_main_minus_baseline_and_index": peak.main_mb - baseline_mb - index_mb,
        "dedup_index_bytes": index_bytes,
        "removed": removed,
        "filtered": filtered,
    }


# ---------------------------------------------------------------- datatrove --------------------------
def datatrove_main(corpus: str, work: str) -> None:
    """Runs inside the datatrove venv: the 4 MinHash stages, then prints one JSON line."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import MinhashDedupSignature
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers.jsonl import JsonlWriter

    cfg = MinhashConfig()
    w = Path(work)
    t0 = time.perf_counter()
    LocalPipelineExecutor(pipeline=[JsonlReader(corpus), MinhashDedupSignature(f"{w}/sigs", config=cfg)],
                          tasks=2, workers=2, logging_dir=f"{w}/logs/1").run()
    LocalPipelineExecutor(pipeline=[MinhashDedupBuckets(f"{w}/sigs", f"{w}/buckets", config=cfg)],
                          tasks=cfg.num_buckets, workers=2, logging_dir=f"{w}/logs/2").run()
    LocalPipelineExecutor(pipeline=[MinhashDedupCluster(f"{w}/buckets", f"{w}/remove_ids", config=cfg)],
                          tasks=1, logging_dir=f"{w}/logs/3").run()
    LocalPipelineExecutor(pipeline=[JsonlReader(corpus),
                                    MinhashDedupFilter(f"{w}/remove_ids", exclusion_writer=JsonlWriter(f"{w}/removed")),
                                    JsonlWriter(f"{w}/deduped")],
                          tasks=2, workers=2, logging_dir=f"{w}/logs/4").run()
    elapsed = time.perf_counter() - t0
    removed = []
    for path in sorted(Path(f"{w}/removed").glob("*.jsonl.gz")):
        with gzip.open(path, "rt") as handle:
            removed.extend(json.loads(line)["id"] for line in handle)
    print(json.dumps({"seconds": elapsed, "removed": removed}))


def run_datatrove(python: Path, corpus: Path, work: Path) -> dict:
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([str(python), __file__, "--datatrove-worker", str(corpus), str(work)], stdout=out,
                                stderr=err, text=True, env={**os.environ, "LOGURU_LEVEL": "WARNING"})
        with PeakMemory(proc.pid) as peak:
            code = proc.wait()
        out.seek(0)
        err.seek(0)
        if code != 0:
            raise RuntimeError(f"datatrove run failed:\n{err.read()[-3000:]}")
        result = json.loads(out.read().strip().splitlines()[-1])
    result["peak_rss_mb"] = peak.main_mb
    result["peak_rss_mb_worker"] = peak.child_mb
    result["peak_rss_mb_total"] = peak.total_mb
    return result


# ---------------------------------------------------------------- graded dedup -----------------------
def _open_filters() -> dict:
    """A filter profile that passes every document: the graded run measures dedup alone."""
    return {"min_words": 0, "max_words": 10**9, "min_mean_word_length": 0.0, "max_mean_word_length": 1e9,
            "max_symbol_word_ratio": 1e9, "max_non_alnum_fraction": 1.0, "max_bullet_line_fraction": 1.0,
            "max_ellipsis_line_fraction": 1.0, "max_dup_line_fraction": 1.0, "max_dup_line_char_fraction": 1.0,
            "max_top_ngram_fraction": {}, "max_dup_ngram_fraction": {}, "max_word_length": 10**9}


def lmforge_graded(corpus: Path, variants: dict[str, dict]) -> dict[str, dict]:
    """Removed ids and seconds of lmforge's dedup (the keys `Assessor` computes, then `DedupIndex` in file order)
    for each variant of the dedup settings (overrides of `DedupConfig`; {} = the defaults)."""
    import numpy as np

    from lmforge_core.config.data import DataConfig
    from tasks.dedup import DedupIndex, Verdict
    from tasks.quality.assess import Assessor

    rows = [json.loads(line) for name in sorted(os.listdir(corpus)) for line in (corpus / name).open()]
    assessor = Assessor(DataConfig(filter_profiles={"open": _open_filters()}, filter_profile="open"))
    t0 = time.perf_counter()
    assessed = [assessor.assess(r["text"]) for r in rows]
    sign_s = time.perf_counter() - t0
    keys, sigs, ids = [a.exact_key for a in assessed], np.stack([a.signature for a in assessed]), [r["id"] for r in rows]
    results = {}
    for name, overrides in variants.items():
        cfg = DataConfig(dedup=overrides).dedup
        index = DedupIndex(cfg.num_perm, cfg.near_duplicate_threshold, cfg.containment_threshold, cfg.lsh_bands,
                           cfg.lsh_rows)
        t0 = time.perf_counter()
        decisions = index.admit_many(keys, sigs, ids)
        results[name] = {"removed": {i for i, d in zip(ids, decisions, strict=True) if d.verdict is not Verdict.UNIQUE},
                         "seconds": sign_s + time.perf_counter() - t0, "layout": f"{index.bands}x{index.rows}"}
    return results


def run_graded(args: argparse.Namespace, work: Path) -> dict:
    """Build the graded-edit corpus, run datatrove and lmforge's dedup variants on it, print the table."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import graded_corpus

    t0 = time.perf_counter()
    truth = graded_corpus.build(work / "graded", args.graded_per_cell)
    print(f"\ngraded corpus: {args.graded_per_cell} copies per edit kind and level of real documents (the built-in "
          f"sample: {truth['documents']} mutually unrelated ones), {len(truth['controls'])} unrelated controls; "
          f"built in {time.perf_counter() - t0:.0f}s", flush=True)
    variants = {"lmforge before": BEFORE_DEDUP, "lmforge now": {}}
    variants.update({f"sweep {v}": json.loads(v) for v in args.graded_sweep})
    ours = lmforge_graded(work / "graded", variants)
    shares = {name: graded_corpus.removal_shares(r["removed"], truth) for name, r in ours.items()}
    if not args.skip_datatrove:
        peer = run_datatrove(args.datatrove_python, work / "graded", work / "datatrove-graded")
        shares = {"datatrove": graded_corpus.removal_shares(set(peer["removed"]), truth), **shares}
    names = list(shares)
    print("removal share per edit kind and level (a copy counts when it or its original was removed):")
    print(f"{'edit':<14}{'level':>6}  " + "".join(f"{n[:22]:>23}" for n in names))
    for cell in shares[names[0]]:
        print(f"{cell[0]:<14}{cell[1]:>6.0%}  " + "".join(f"{shares[n][cell]:>23.0%}" for n in names))
    for name, r in ours.items():
        print(f"{name}: LSH {r['layout']}, settings {variants[name] or 'defaults'}, {r['seconds']:.1f}s")
    return {name: {f"{k}@{lvl:.2f}": v for (k, lvl), v in table.items()} for name, table in shares.items()}


# The dedup defaults before the graded calibration (issue 10), to print beside the current ones.
BEFORE_DEDUP = {"near_duplicate_threshold": 0.8, "containment_threshold": None, "lsh_bands": 14, "lsh_rows": 9}


# ---------------------------------------------------------------- main -------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=50_000)
    parser.add_argument("--words", type=int, default=300)
    parser.add_argument("--exact-frac", type=float, default=0.05)
    parser.add_argument("--near-frac", type=float, default=0.10)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--datatrove-python", type=Path, default=ROOT / ".venv-bench" / "bin" / "python")
    parser.add_argument("--skip-datatrove", action="store_true")
    parser.add_argument("--json-out", type=Path, help="also write the figures here")
    parser.add_argument("--graded-per-cell", type=int, default=25, help="edited copies per kind and level")
    parser.add_argument("--graded-only", action="store_true", help="only the graded-edit dedup table")
    parser.add_argument("--skip-graded", action="store_true")
    parser.add_argument("--graded-sweep", action="append", default=[], metavar="JSON",
                        help='another lmforge dedup variant to print, e.g. \'{"near_duplicate_threshold": 0.6}\'')
    parser.add_argument("--datatrove-worker", nargs=2, metavar=("CORPUS", "WORK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.datatrove_worker:
        datatrove_main(*args.datatrove_worker)
        return

    sys.path.insert(0, str(ROOT))
    work = Path(tempfile.mkdtemp(prefix="lmforge-bench-"))
    try:
        if not args.datatrove_python.exists() and not args.skip_datatrove:
            raise SystemExit(f"{args.datatrove_python} not found: create it with `make .venv-bench/.installed` "
                             "or pass --skip-datatrove")
        graded = None if args.skip_graded else run_graded(args, work)
        if args.graded_only:
            if args.json_out:
                args.json_out.write_text(json.dumps({"graded": graded}, indent=2))
            return
        corpus = work / "corpus"
        t0 = time.perf_counter()
        gen = generate_corpus(corpus, args.docs, args.words, args.exact_frac, args.near_frac, args.seed)
        truth = gen["truth"]
        print(f"corpus: {args.docs} docs (~{args.words} words), {sum(v[0] == 'exact' for v in truth.values())} exact "
              f"+ {sum(v[0] == 'near' for v in truth.values())} near duplicates injected (near-dup Jaccard min "
              f"{gen['near_jaccard_min']:.3f}, median {gen['near_jaccard_median']:.3f}); "
              f"generated in {time.perf_counter() - t0:.1f}s", flush=True)

        # lmforge first: its worker-process peak (RUSAGE_CHILDREN) must not include datatrove's processes.
        ours = run_lmforge(corpus, work / "lmforge", args.docs)
        quality = score(ours["removed"], truth, ours["filtered"])
        print(f"lmforge whole ingest path: {ours['docs_per_s']:.0f} docs/s ({ours['seconds']:.1f}s; stages "
              f"{ours['stage_seconds']}), gate {'passed' if ours['gate_success'] else 'FAILED'}, "
              f"accepted {ours['accepted']}, filtered {len(ours['filtered'])}", flush=True)
        print(f"lmforge dedup: precision {quality['precision']:.4f}, recall {quality['recall']:.4f} "
              f"(exact {quality['recall_exact']:.4f}, near {quality['recall_near']:.4f})")
        print(f"lmforge peak RSS: main {ours['peak_rss_mb_main']:.0f} MB = baseline {ours['baseline_rss_mb']:.0f} MB "
              f"+ dedup index {ours['dedup_index_mb']:.0f} MB ({ours['dedup_index_entries']} entries, in memory; "
              f"snapshot file {ours['dedup_index_bytes'] / 1e6:.1f} MB) + rest "
              f"{ours['peak_rss_mb_main_minus_baseline_and_index']:.0f} MB; largest worker "
              f"{ours['peak_rss_mb_worker']:.0f} MB, all processes {ours['peak_rss_mb_total']:.0f} MB; "
              f"tokenizer training (once, not in the timing) {ours['tokenizer_training_s']:.1f}s", flush=True)
        peer = None
        if not args.skip_datatrove:
            peer = run_datatrove(args.datatrove_python, corpus, work / "datatrove")
            peer_quality = score(set(peer["removed"]), truth, set())
            print(f"datatrove MinHash dedup: {args.docs / peer['seconds']:.0f} docs/s ({peer['seconds']:.1f}s), "
                  f"precision {peer_quality['precision']:.4f}, recall {peer_quality['recall']:.4f} "
                  f"(exact {peer_quality['recall_exact']:.4f}, near {peer_quality['recall_near']:.4f}), "
                  f"peak RSS main {peer['peak_rss_mb']:.0f} MB, largest worker {peer['peak_rss_mb_worker']:.0f} MB, "
                  f"all processes {peer['peak_rss_mb_total']:.0f} MB", flush=True)

        figures = {"docs": args.docs, "lmforge": {k: v for k, v in ours.items() if k not in ("removed", "filtered")},
                   "lmforge_quality": quality, "graded": graded}
        if peer is not None:
            ratio = ours["docs_per_s"] / (args.docs / peer["seconds"])
            print(f"ratio: lmforge whole path / datatrove MinHash alone = {ratio:.2f}x (target >= 2x)")
            figures.update(datatrove={"seconds": peer["seconds"], "docs_per_s": args.docs / peer["seconds"],
                                      "peak_rss_mb": peer["peak_rss_mb"],
                                      "peak_rss_mb_total": peer["peak_rss_mb_total"]},
                           datatrove_quality=peer_quality, ratio=ratio)
        if args.json_out:
            args.json_out.write_text(json.dumps(figures, indent=2, default=str))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
