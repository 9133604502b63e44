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


@pytest.fixture()
def one_thread():
    """One torch thread: bit-identical results need the same thread count in every run, and two
    threads on a 2-core machine slow down many times over when another process is busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
