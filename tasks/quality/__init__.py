"""Quality stage: text cleaning, heuristic filters, PII redaction, deduplication and the GX quality gate.

Plain functions live in the modules; `prefect_tasks` holds the thin Prefect entry points.
May import: lmforge_core, and (gate only) great_expectations. Never flows/.
"""
