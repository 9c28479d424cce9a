"""dashboard: the Streamlit review app (data quality, training, evaluation, bias; approve/reject/roll back).

Layer: faces. Reads and writes only through lmforge_core's repository functions; never raw SQL.
"""
