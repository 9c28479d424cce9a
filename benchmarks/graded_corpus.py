"""The graded-edit corpus of `bench_ingest.py --graded`: edited copies of real documents at known levels.

Real text: the documents of the built-in sample (`tasks/ingest/sample.py`: pydoc pages and /usr/share/doc
READMEs of this machine), kept only when no two of them share more than `MAX_BASE_JACCARD` of their
5-word shingles (exact sets), so an unrelated pair in the corpus is unrelated in truth. Each copy edits one
original (each original is used once), with words and spans taken from other real documents (donors):

- substitute: that share of the word positions gets a donor word;
- replace_span: one contiguous span of that share of the words becomes donor text of the same length;
- append: donor text of that share of the length is appended;
- excerpt: the copy is a contiguous excerpt of that share of the original (wholly contained in it);
- formatting: the same words re-wrapped, re-indented and with other blank lines (level 0);
- control: an unrelated real document (none of the above); removing one is a false positive.

Originals and controls are in `part-00000.jsonl`, the copies after them in `part-00001.jsonl`.
"""

from __future__ import annotations

import json
import random
import re
import textwrap
from collections import Counter, defaultdict
from datetime import date
from pathlib import Path

EDITS: dict[str, tuple[float, ...]] = {
    "substitute": (0.01, 0.02, 0.03, 0.05, 0.10, 0.20, 0.30, 0.40),
    "replace_span": (0.05, 0.10, 0.20, 0.30, 0.50),
    "append": (0.10, 0.20, 0.30),
    "excerpt": (0.90, 0.75, 0.50),
    "formatting": (0.0,),
}
MAX_BASE_JACCARD = 0.1
DONORS = 40  # real documents that lend words and spans to the edits (they are not in the corpus)
_WORD = re.compile(r"\w+")


def shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    words = _WORD.findall(text.casefold())
    return set(zip(*(words[i:] for i in range(n)), strict=False))


def real_documents(min_words: int = 150, docs_per_drop: int = 400) -> list[str]:
    """The built-in sample's documents (every topic), of at least `min_words` words, mutually unrelated."""
    from tasks.ingest.sample import TOPICS, drop_records

    texts = [r["text"] for day, topic in enumerate(TOPICS, start=1)
             for r in drop_records(topic, day, date(2026, 1, 1), docs_per_drop) if len(r["text"].split()) >= min_words]
    kept: list[str] = []
    kept_sets: list[set[tuple[str, ...]]] = []
    owners: dict[tuple[str, ...], list[int]] = defaultdict(list)  # shingle -> kept documents holding it
    for text in texts:
        own = shingles(text)
        shared = Counter(i for s in own for i in owners.get(s, ()))
        if any(n / len(own | kept_sets[i]) > MAX_BASE_JACCARD for i, n in shared.items()):
            continue
        for s in own:
            owners[s].append(len(kept))
        kept.append(text)
        kept_sets.append(own)
    return kept


def edit(kind: str, level: float, text: str, donor: list[str], rng: random.Random) -> str:
    """One edited copy of `text` (see the module docstring); `donor` is the words of another real document."""
    words = text.split()
    n = len(words)
    if kind == "substitute":
        for i in rng.sample(range(n), max(1, round(level * n))):
            words[i] = rng.choice(donor)
    elif kind == "replace_span":
        span = max(1, round(level * n))
        start = rng.randrange(n - span + 1)
        at = rng.randrange(max(1, len(donor) - span + 1))
        words[start : start + span] = (donor * (span // len(donor) + 1))[at : at + span]
    elif kind == "append":
        words += (donor * (round(level * n) // len(donor) + 1))[: round(level * n)]
    elif kind == "excerpt":
        span = round(level * n)
        start = rng.randrange(n - span + 1)
        words = words[start : start + span]
    elif kind == "formatting":
        paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]
        return "\n\n\n".join(textwrap.indent(textwrap.fill(p, rng.choice((40, 60, 100))), "    ") for p in paragraphs)
    else:
        raise ValueError(f"unknown edit kind {kind!r}")
    return " ".join(words)


def build(out: Path, per_cell: int, seed: int = 11) -> dict:
    """Write the corpus under `out`; return its truth: copies (id -> kind, level, original id) and controls."""
    rng = random.Random(seed)
    docs = real_documents()
    rng.shuffle(docs)
    cells = [(kind, level) for kind, levels in EDITS.items() for level in levels]
    used = per_cell * len(cells)
    if len(docs) < used + DONORS + per_cell:
        raise SystemExit(f"only {len(docs)} unrelated real documents; --graded-per-cell {per_cell} needs "
                         f"{used + DONORS + per_cell}")
    # every document left over is an unrelated control.
    originals, controls, donors = docs[:used], docs[used:-DONORS], docs[-DONORS:]
    base, copies = [], []
    truth: dict[str, tuple[str, float, str]] = {}
    for c, (kind, level) in enumerate(cells):
        for j in range(per_cell):
            oid, cid = f"orig-{c:02d}-{j:03d}", f"copy-{kind}-{level:.2f}-{j:03d}"
            original = originals[c * per_cell + j]
            base.append({"id": oid, "text": original})
            copies.append({"id": cid, "text": edit(kind, level, original, rng.choice(donors).split(), rng)})
            truth[cid] = (kind, level, oid)
    base += [{"id": f"control-{j:03d}", "text": text} for j, text in enumerate(controls)]
    rng.shuffle(base)
    rng.shuffle(copies)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("part-00000.jsonl", base), ("part-00001.jsonl", copies)):
        with (out / name).open("w") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in rows)
    return {"copies": truth, "controls": [f"control-{j:03d}" for j in range(len(controls))], "documents": len(docs)}


def removal_shares(removed: set[str], truth: dict) -> dict[tuple[str, float], float]:
    """Per (kind, level), the share of copies deduplicated (the copy or its original removed); ("control", 0) is
    the share of unrelated controls removed."""
    done: dict[tuple[str, float], list[int]] = defaultdict(list)
    for cid, (kind, level, oid) in truth["copies"].items():
        done[(kind, level)].append(cid in removed or oid in removed)
    done[("control", 0.0)] = [cid in removed for cid in truth["controls"]]
    return {cell: sum(hits) / len(hits) for cell, hits in done.items()}
