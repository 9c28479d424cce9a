"""The ``generate_text`` model: the one text-in/text-out entry (decoupled, streams text pieces).

Encodes with the version's tokenizer, streams ``generate`` of the same version through decoupled BLS
(request parameters passed on), and sends each new piece of text as soon as it decodes to whole
characters (a multi-byte character split over tokens waits for its last byte).
"""

from __future__ import annotations

import json
import threading
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from serving.triton_models.common import ModelArgs, load_version_tokenizer

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def _bls_parameters(raw: str) -> dict[str, Any]:
    """Request parameters for BLS, which carries only bool/int/str: floats travel as their text."""
    return {k: repr(v) if isinstance(v, float) else v for k, v in json.loads(raw or "{}").items()}


class TextModel:
    def __init__(self, args: dict[str, Any]) -> None:
        self.args = ModelArgs.parse(args)
        self.tokenizer = load_version_tokenizer(self.args.directory)

    def _stream(self, request: Any, sender: Any) -> None:
        try:
            raw = pb_utils.get_input_tensor_by_name(request, "text_input").as_numpy().reshape(-1)[0]
            text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
            ids = np.array(self.tokenizer.encode(text), dtype=np.int64)
            inner = pb_utils.InferenceRequest(model_name="generate", model_version=self.args.version,
                                              inputs=[pb_utils.Tensor("input_ids", ids)],
                                              requested_output_names=["token_id"],
                                              parameters=_bls_parameters(request.parameters()))
            tokens: list[int] = []
            sent = ""
            for response in inner.exec(decoupled=True):
                if response.has_error():
                    raise ValueError(response.error().message())
                tensor = pb_utils.get_output_tensor_by_name(response, "token_id")
                if tensor is None or sender.is_cancelled():
                    continue
                tokens.extend(tensor.as_numpy().reshape(-1).tolist())
                decoded = self.tokenizer.decode(tokens)
                if decoded.endswith("\ufffd") or len(decoded) <= len(sent):
                    continue
                piece, sent = decoded[len(sent):], decoded
                sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("text_output", np.array([piece.encode()], dtype=np.object_))]))
            sender.send(flags=FINAL)
        except Exception as exc:  # every failure ends the stream with its reason
            sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"generate_text: {exc}")), flags=FINAL)

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            threading.Thread(target=self._stream, args=(request, request.get_response_sender()), daemon=True).start()
        return None

    def finalize(self) -> None:
        return None
