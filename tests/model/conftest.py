"""Fixtures of the model tests: a data root holding two dataset versions."""

import pytest
from helpers import pattern_windows, write_dataset


@pytest.fixture
def data_root(tmp_path):
    root = tmp_path / "data"
    write_dataset(root, "ds-000001", pattern_windows(96, seed=1, offset=3))
    write_dataset(root, "ds-000002", pattern_windows(64, seed=2, offset=5))
    return root


@pytest.fixture(scope="session")
def text_model(tmp_path_factory):
    """A tiny model trained on real text with a real tokenizer, registered as lmforge:v1 (candidate)."""
    from text_model import train_text_model

    trained = train_text_model(tmp_path_factory.mktemp("text-model"))
    yield trained
    trained.runtime.metadata.dispose()
