"""Ingest stage: sources (local folders, s3:// prefixes), shard readers, the built-in sample source and
the end-to-end `run_ingest` pipeline as named steps (`staging`: load index, assess + deduplicate;
`pipeline`: gate -> quarantine or accept -> tokenizer -> dataset version -> commit) and `retry_batch`,
which re-runs a quarantined or failed batch's shards.

Plain functions live in the modules; `prefect_tasks` holds the thin Prefect entry points (one per step).
May import: lmforge_core, model, tasks.quality, tasks.dedup, tasks.dataset. Never flows/.
"""
