"""dashboard: the Streamlit review app (data quality, training, evaluation, bias; approve/reject/roll back).

Layer: faces. May import lmforge_core, tasks, serving and model; reads and writes the metadata only through
lmforge_core's repository functions, never raw SQL.

``app.py`` is the entry point (``st.navigation`` over ``views/``, started by ``lmforge dashboard``); pages read
through ``data.py`` (cached, bounded calls of ``lmforge_core.metadata.dashboard_repository``) and act through
``tasks.review``.
"""
