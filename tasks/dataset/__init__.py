"""Dataset stage: tokenize accepted documents, pack them into fixed-length windows and write an
immutable tokenized dataset version (``lmforge.tokens.v1``: .bin shards + manifest).

May import: lmforge_core, model (tokenizer, token shards). Never flows/.
"""
