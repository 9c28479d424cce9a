"""Triton python-backend entry, copied into every model version of an lmforge repository.

One file serves all four models: the ``lmforge_model`` parameter of the model's config names the class in
``serving.triton_models`` that does the work, so the logic lives (and is tested and linted) in the library.

The python-backend stub ignores PYTHONPATH and runs the first ``python3`` on PATH, so which lmforge it
imports is decided here: the ``lmforge_source`` parameter (written by the repository writer for a local
server: the folder the writer itself was imported from) goes first on ``sys.path``; left empty, as in
repositories meant for a Triton container, the installed ``lmforge`` package is used.
"""

import importlib
import json
import sys


def _parameter(args, key, default=""):
    params = json.loads(args["model_config"]).get("parameters", {})
    return params.get(key, {}).get("string_value", default) or default


class TritonPythonModel:
    def initialize(self, args):
        source = _parameter(args, "lmforge_source")
        if source and source not in sys.path:
            sys.path.insert(0, source)
        models = importlib.import_module("serving.triton_models")
        self.impl = getattr(models, _parameter(args, "lmforge_model"))(args)

    def execute(self, requests):
        return self.impl.execute(requests)

    def finalize(self):
        self.impl.finalize()
