"""The ``lm`` model's python-backend variant: onnxruntime on the version's ``model.onnx``.

For servers without the onnxruntime backend (the bundled CPU server); production servers run the same
file with ``platform: onnxruntime_onnx`` or its TensorRT plan (``configs/`` of the model).
"""

from __future__ import annotations

from typing import Any

import triton_python_backend_utils as pb_utils

from serving.onnx_files import ONNX_FILE, ort_session
from serving.triton_models.common import ModelArgs


class LMModel:
    def __init__(self, args: dict[str, Any]) -> None:
        self.args = ModelArgs.parse(args)
        self.session = ort_session(self.args.directory / ONNX_FILE, threads=self.args.int_param("threads", 1))
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def _one(self, request: Any) -> Any:
        feeds = {}
        for name in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise ValueError(f"input {name!r} is missing")
            feeds[name] = tensor.as_numpy()
        values = self.session.run(self.outputs, feeds)
        return pb_utils.InferenceResponse([pb_utils.Tensor(n, v) for n, v in zip(self.outputs, values, strict=True)])

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                responses.append(self._one(request))
            except Exception as exc:  # onnxruntime's own error types: shapes that do not fit the graph
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"lm: {exc}")))
        return responses

    def finalize(self) -> None:
        return None
