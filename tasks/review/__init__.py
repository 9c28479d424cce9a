"""Review stage: the one implementation of a human review decision, a promotion and a rollback of the
``production`` alias, used by the dashboard's buttons and by ``lmforge review``.

``actions.py`` is plain functions over the metadata store (usable with no Prefect server when no flow run
waits); ``run_input.py`` holds the Prefect side: the ``ReviewInput`` a suspended flow waits for, and its resume.
"""

from tasks.review.actions import (
    AliasMove,
    ReviewOutcome,
    ReviewRefusedError,
    apply_review,
    promote,
    rollback_production,
)

__all__ = ["AliasMove", "ReviewOutcome", "ReviewRefusedError", "apply_review", "promote", "rollback_production"]
