"""Loading a registered model version for inference: aliases, numbers, NAME:vN, integrity."""

import pytest
import torch

from lmforge_core.metadata.repository import NotFoundError
from model.registry import load_model_version, split_ref
from model.weights import WeightsIntegrityError, load_model


def load(text_model, ref):
    rt = text_model.runtime
    return load_model_version(rt.metadata, rt.artifacts, rt.settings.model_name, ref,
                              tokenizer_config=rt.settings.data.tokenizer)


@pytest.mark.parametrize("ref", ["candidate", "1", "v1", "lmforge:v1"])
def test_every_reference_form_loads_the_trained_weights_and_tokenizer(text_model, ref):
    loaded = load(text_model, ref)
    assert loaded.model_version == "lmforge:v1" and not loaded.model.training
    assert loaded.tokenizer.sha256 == text_model.tokenizer.sha256
    assert loaded.config.vocab_size == text_model.tokenizer.vocab_size
    with text_model.runtime.metadata.session() as session:
        from lmforge_core.metadata import repository as repo
        prefix = repo.resolve_model_version(session, "lmforge", "1").artifacts["weights"]
    store_root = text_model.runtime.artifacts.local_path(f"{prefix}/model.safetensors").parent
    reference = load_model(store_root)
    for (name, a), b in zip(loaded.model.state_dict().items(), reference.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_unknown_versions_and_bad_references_are_named(text_model):
    with pytest.raises(NotFoundError, match="production"):
        load(text_model, "production")
    with pytest.raises(NotFoundError, match="v7"):
        load(text_model, "7")
    with pytest.raises(ValueError, match="NAME:VERSION"):
        split_ref("lmforge", "lmforge:")
    assert split_ref("lmforge", "tiny:v3") == ("tiny", "v3")


def test_a_tampered_weight_file_is_refused(text_model, tmp_path):
    rt = text_model.runtime
    from lmforge_core.metadata import repository as repo
    with rt.metadata.session() as session:
        version = repo.resolve_model_version(session, "lmforge", "1")
        record = dict(version.artifacts)
    record["sha256"] = dict(record["sha256"]) | {"model.safetensors": "0" * 64}
    from model.registry import fetch_weights
    with pytest.raises(WeightsIntegrityError, match="recorded"):
        fetch_weights(rt.artifacts, record, tmp_path, "lmforge:v1")
