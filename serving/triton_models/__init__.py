"""The logic of the python-backend models (``serving/triton_repo/model.py`` dispatches here by name).

The model classes import ``triton_python_backend_utils``, which exists only inside Triton's python stub,
so they are loaded on first access; ``common`` is importable anywhere (the repository writer uses it).
"""

from __future__ import annotations

import importlib
from typing import Any

_CLASSES = {"GenerateModel": "generate", "LMModel": "lm", "TextModel": "text", "TokenizerModel": "tokenizer"}


def __getattr__(name: str) -> Any:
    if name not in _CLASSES:
        raise AttributeError(f"serving.triton_models has no model class {name!r}; known: {', '.join(_CLASSES)}")
    return getattr(importlib.import_module(f"serving.triton_models.{_CLASSES[name]}"), name)
