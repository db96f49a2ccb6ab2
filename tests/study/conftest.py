"""Fixtures shared by the checkpoint tests."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Tiny matmuls are fastest on one thread (and the test machine's cores are shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
