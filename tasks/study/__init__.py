"""Studies of the platform's own behaviour, run with its own stages (``lmforge study ...``).

May import: lmforge_core, model, tasks.*. Never flows/.
"""
