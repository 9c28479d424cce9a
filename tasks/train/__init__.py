"""Training stage: ``run_training`` (plain function: data, starting model, DeepSpeed run, recording) and
its thin Prefect task. May import model and lmforge_core; Prefect only in ``task.py``.
"""
