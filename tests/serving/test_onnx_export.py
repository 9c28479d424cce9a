"""ONNX export with KV cache: parity with PyTorch, refusal over the tolerance, compressed variants."""

from __future__ import annotations

import json

import numpy as np
import pytest
from serving_helpers import tiny_model, tiny_tokenizer

from serving.onnx_export import ExportParityError, check_parity, export_onnx, ort_session
from serving.onnx_variants import add_variants


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tok = tiny_tokenizer()
    model = tiny_model(tok.vocab_size)
    prompt = tok.encode("Return a JSON string representation of a Python data structure.")
    return model, tok, prompt, export_onnx(model, tmp_path_factory.mktemp("onnx"), prompt)


def test_export_matches_pytorch_and_records_the_difference(exported):
    _, _, prompt, export = exported
    manifest = json.loads((export.directory / "export.json").read_text())
    assert manifest["parity"]["max_abs"] == export.parity.max_abs <= 1e-3
    assert manifest["parity"]["prompt_tokens"] == len(prompt)
    assert manifest["files"]["model.onnx"] == export.sha256
    assert "past_key_1" in manifest["inputs"] and "present_value_1" in manifest["outputs"]


def test_an_export_that_does_not_match_its_network_is_refused(exported):
    _, tok, prompt, export = exported
    other = tiny_model(tok.vocab_size, seed=1)  # e.g. a stale graph next to new weights
    with pytest.raises(ExportParityError, match="over the tolerance"):
        check_parity(other, ort_session(export.onnx_path), prompt)


def test_int8_and_fp16_variants_record_their_perplexity_change(exported):
    _, tok, _, export = exported
    windows = np.array([tok.encode("Decode a JSON document from a string and return it as Python.")[:12]] * 4)
    variants = add_variants(export, windows)
    for kind in ("int8", "fp16"):
        entry = variants[kind]
        assert (export.directory / entry["file"]).is_file()
        if entry["runnable_on_cpu"]:
            assert entry["perplexity"] > 1 and np.isfinite(entry["perplexity_ratio"])
            assert entry["perplexity_ratio"] == pytest.approx(entry["perplexity"] / entry["fp32_perplexity"])
        else:
            assert "cannot run" in entry["reason"]
    assert variants["int8"]["size_ratio"] < 0.8
    assert json.loads((export.directory / "export.json").read_text())["variants"]["int8"] == variants["int8"]
