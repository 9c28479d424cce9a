"""tasks: one subpackage per pipeline stage (ingest, quality, dataset, tokenizer, train, ...).

Layer: stages. Each stage is plain functions plus a thin Prefect ``@task`` entry point. May import
model, serving and lmforge_core; never flows or dashboard.
"""
