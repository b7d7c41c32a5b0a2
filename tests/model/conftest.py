"""Fixtures shared by the model tests."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Torch on one thread for the test (far faster on a busy shared CPU), restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
