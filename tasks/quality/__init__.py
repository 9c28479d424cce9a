"""Quality stage: text cleaning, heuristic filters, PII redaction, drift and the GX quality gate.

Plain functions live in the modules (deduplication is its own stage, `tasks.dedup`).
May import: lmforge_core, tasks.dedup (signatures), and (gate only) great_expectations. Never flows/.
"""
