"""The Streamlit review dashboard (``lmforge dashboard``): a face over the metadata and artifact stores.

``app.py`` is the entry point (``st.navigation`` over ``views/``); pages read through ``data.py`` (cached,
bounded calls of the core's repository functions) and act through ``tasks.review``.
"""
