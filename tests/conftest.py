import pytest
import torch

from tiny_models import tiny_pipeline


@pytest.fixture(scope="session")
def tiny_pipe():
    """A 19-class pipeline small enough to sample in well under a second on CPU."""
    return tiny_pipeline(seed=0, image_size=64)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
