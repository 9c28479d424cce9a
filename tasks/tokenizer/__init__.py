"""Tokenizer stage: train a byte-level BPE (Hugging Face `tokenizers`) on the first dataset version,
store it versioned in the artifact store, and load the current one for later runs.

May import: lmforge_core. Never flows/.
"""
