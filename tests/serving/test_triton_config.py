"""Generated configs parse against Triton's ModelConfig schema; staged versions are checked before publishing."""

from __future__ import annotations

import pytest
from serving_helpers import tiny_model, tiny_tokenizer

from serving.onnx_export import export_onnx
from serving.triton_config import MODELS, ConfigError, ServingOptions, validate_config
from serving.triton_repository import (
    RepositoryError,
    publish_version,
    published_versions,
    serve_versions,
    stage_version,
)


@pytest.fixture
def staged(tmp_path):
    tok = tiny_tokenizer()
    export = export_onnx(tiny_model(tok.vocab_size), tmp_path / "export", tok.encode("Return a JSON string"))
    return stage_version(tmp_path / "repo", 3, export.directory, tok, {"model_version": "t:v3"})


def test_published_configs_are_valid_and_serve_the_version(staged):
    publish_version(staged, ServingOptions(max_slots=4))
    repo = staged.repository
    assert published_versions(repo) == [3]
    for model in MODELS:
        config = validate_config((repo / model / "config.pbtxt").read_text())
        assert config.name == model and list(config.version_policy.specific.versions) == [3]
    generate = validate_config((repo / "generate" / "config.pbtxt").read_text())
    assert generate.model_transaction_policy.decoupled and generate.parameters["max_slots"].string_value == "4"
    tokenizer = validate_config((repo / "tokenizer" / "config.pbtxt").read_text())
    assert tokenizer.max_batch_size == 8 and tokenizer.HasField("dynamic_batching")
    ort = validate_config((repo / "lm" / "configs" / "onnxruntime_gpu.pbtxt").read_text())
    assert ort.platform == "onnxruntime_onnx"
    accelerator = ort.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert accelerator.name == "tensorrt" and accelerator.parameters["precision_mode"] == "FP16"
    assert validate_config((repo / "lm" / "configs" / "tensorrt.pbtxt").read_text()).platform == "tensorrt_plan"
    with pytest.raises(RepositoryError, match="not published"):
        serve_versions(repo, [4])


def test_every_version_folder_holds_what_its_model_reads(staged):
    """A server on a cloud repository downloads each model into a folder of its own: no model may read a
    sibling's folder. Locally the second graph is a hard link, not a copy."""
    publish_version(staged, ServingOptions())
    folder = {model: staged.repository / model / "3" for model in MODELS}
    expected = {"lm": {"model.onnx", "export.json"}, "tokenizer": {"tokenizer.json", "tokenizer_meta.json"},
                "generate": {"model.onnx", "export.json", "tokenizer_meta.json"},
                "generate_text": {"tokenizer.json", "tokenizer_meta.json"}}
    for model, names in expected.items():
        assert {p.name for p in folder[model].iterdir()} == names | {"model.py", "lmforge.json"}, model
    assert (folder["generate"] / "model.onnx").samefile(folder["lm"] / "model.onnx")
    assert (folder["generate_text"] / "tokenizer.json").read_text() == (folder["tokenizer"] / "tokenizer.json").read_text()


def test_a_config_that_does_not_parse_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"bad\.pbtxt is not a valid Triton model config"):
        validate_config('name: "lm"\nmax_batch_sise: 4\n', "bad.pbtxt")
    with pytest.raises(ConfigError, match="neither a backend nor a platform"):
        validate_config('name: "lm"\n', "x.pbtxt")


def test_a_tampered_staged_file_is_not_published(staged):
    (staged.staging_dir("lm") / "model.onnx").write_bytes(b"not a graph")
    with pytest.raises(RepositoryError, match="does not match its recorded sha256"):
        publish_version(staged, ServingOptions())
    assert published_versions(staged.repository) == []
