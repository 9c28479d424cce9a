"""lmforge_core: the platform's foundation layer.

Settings (one typed object, read once and passed down), the metadata store (SQLAlchemy ORM,
typed repository functions, Alembic migrations) and the artifact store (local folder or S3).

Layer: core. Imports nothing of the project (no flows, tasks, model, serving or dashboard).
"""
