"""The ``tokenizer`` model: TEXT -> TOKEN_IDS, or TOKEN_IDS -> TEXT, with the model/ tokenizer wrapper."""

from __future__ import annotations

from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from serving.triton_models.common import ModelArgs, load_version_tokenizer


class TokenizerModel:
    def __init__(self, args: dict[str, Any]) -> None:
        self.args = ModelArgs.parse(args)
        self.tokenizer = load_version_tokenizer(self.args.directory)

    def _one(self, request: Any) -> Any:
        text = pb_utils.get_input_tensor_by_name(request, "TEXT")
        ids = pb_utils.get_input_tensor_by_name(request, "TOKEN_IDS")
        if (text is None) == (ids is None):
            raise ValueError("send exactly one of TEXT (to encode) or TOKEN_IDS (to decode)")
        if text is not None:
            value = text.as_numpy().reshape(-1)[0]
            encoded = self.tokenizer.encode(value.decode("utf-8") if isinstance(value, bytes) else str(value))
            out_ids = np.array([encoded], dtype=np.int64)
            out_text = text.as_numpy().reshape(1, 1)
        else:
            out_ids = ids.as_numpy().reshape(1, -1).astype(np.int64)
            decoded = self.tokenizer.decode(out_ids[0].tolist())
            out_text = np.array([[decoded.encode("utf-8")]], dtype=np.object_)
        return pb_utils.InferenceResponse([pb_utils.Tensor("TOKEN_IDS", out_ids), pb_utils.Tensor("TEXT", out_text)])

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                responses.append(self._one(request))
            except (ValueError, UnicodeDecodeError) as exc:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"tokenizer: {exc}")))
        return responses

    def finalize(self) -> None:
        return None
