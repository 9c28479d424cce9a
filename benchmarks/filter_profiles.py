"""Rejection share of real reference documentation under each filter profile (the README's "Filter profiles").

Usage (from the repository root):
    .venv/bin/python benchmarks/filter_profiles.py            # every topic of the built-in sample
    .venv/bin/python benchmarks/filter_profiles.py --days 2   # the first two topics

What is measured: the documents of the built-in sample (`tasks/ingest/sample.py`: pydoc pages and
/usr/share/doc READMEs of this machine, chunked as ingestion sees them), each cleaned and scored as
ingestion does, under every configured profile; printed per profile: the share rejected, and per rule
the share it rejects (a document may fail several rules; the first one names its rejection).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=6, help="topics of the sample to take (1-6)")
    parser.add_argument("--docs-per-drop", type=int, default=250)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from lmforge_core.config.data import DataConfig
    from tasks.ingest.sample import TOPICS, drop_records
    from tasks.quality.cleaning import clean_text
    from tasks.quality.filters import bounds, failed_filters, score_document

    records = [r for day, topic in enumerate(TOPICS[: args.days], start=1)
               for r in drop_records(topic, day, date(2026, 1, 1), args.docs_per_drop)]
    texts = [clean_text(r["text"]) for r in records]
    kinds = [r["source"].split(":")[0] for r in records]  # pydoc | usr-share-doc
    print(f"{len(texts)} documents of the built-in sample ({args.days} topics)")
    cfg = DataConfig()
    for name, thresholds in sorted(cfg.filter_profiles.items()):
        checks = bounds(thresholds)
        failures = [failed_filters(score_document(t, thresholds), checks) for t in texts]
        rejected = sum(bool(f) for f in failures)
        by_rule = Counter(rule for f in failures for rule in f)
        rules = ", ".join(f"{rule} {n / len(texts):.1%}" for rule, n in by_rule.most_common())
        per_kind = ", ".join(f"{kind} {sum(bool(f) for f, k in zip(failures, kinds, strict=True) if k == kind)}"
                             f"/{kinds.count(kind)}" for kind in sorted(set(kinds)))
        print(f"profile {name:<10} rejects {rejected / len(texts):6.1%} ({rejected}/{len(texts)}; {per_kind}); "
              f"by rule: {rules}")


if __name__ == "__main__":
    main()
