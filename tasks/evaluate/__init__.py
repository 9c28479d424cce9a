"""The evaluation stage: perplexity and forgetting, generation quality, bias and fairness probes,
the promotion gate and the report (plain functions; thin Prefect tasks in ``prefect_tasks``)."""
