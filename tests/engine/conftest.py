import pytest

from engine.model.checkpoint import save_model


@pytest.fixture
def tiny_model_dir(tiny_model, tmp_path):
    """The random-weight test model saved as a model directory (fast to load; with threshold 0 it always matches)."""
    return save_model(tiny_model, tmp_path / "tiny")
