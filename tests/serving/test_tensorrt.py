"""TensorRT paths: one log line and the ONNX model where TensorRT is absent; a real fp16 plan on a GPU."""

from __future__ import annotations

import logging

import pytest
from serving_helpers import tiny_model

from serving.onnx_export import export_onnx
from serving.tensorrt import PlanProfile, build_plan_if_possible, ort_tensorrt_settings, tensorrt_module


@pytest.fixture(scope="module")
def onnx_export(tmp_path_factory):
    model = tiny_model(96)
    return export_onnx(model, tmp_path_factory.mktemp("trt"), list(range(3, 15)))


def test_profile_covers_batch_sequence_and_an_empty_cache():
    ranges = PlanProfile(max_batch=8, context=64).ranges(kv_heads=2, head_dim=16, n_layers=2)
    assert ranges["input_ids"] == ((1, 1), (4, 1), (8, 64))
    assert ranges["past_key_1"][0] == (1, 2, 0, 16) and ranges["past_value_1"][2] == (8, 2, 64, 16)
    assert len(ranges) == 3 + 4


def test_tensorrt_provider_settings_enable_fp16_and_the_engine_cache():
    settings = ort_tensorrt_settings("/cache")
    assert settings["trt_fp16_enable"] == "true" and settings["trt_engine_cache_path"] == "/cache"


@pytest.mark.skipif(tensorrt_module() is not None, reason="TensorRT is importable here")
def test_without_tensorrt_one_log_line_and_no_plan(onnx_export, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="serving.tensorrt"):
        plan = build_plan_if_possible(onnx_export.onnx_path, tmp_path, PlanProfile(4, 64), onnx_export.config)
    assert plan is None and not any(tmp_path.iterdir())
    lines = [r.getMessage() for r in caplog.records if r.name == "serving.tensorrt"]
    assert len(lines) == 1 and "serves the ONNX model" in lines[0]


@pytest.mark.gpu
def test_fp16_plan_builds_on_a_gpu(onnx_export, tmp_path):
    if tensorrt_module() is None:
        pytest.skip("the tensorrt Python API does not import on this GPU machine")
    plan = build_plan_if_possible(onnx_export.onnx_path, tmp_path, PlanProfile(4, 64), onnx_export.config)
    assert plan is not None and plan.stat().st_size > 0
    assert (tmp_path / "plan.json").is_file()
