"""Which device each process takes, and MFU per device (the GPU-only branches are driven
here by pretending CUDA is available; no GPU is touched)."""

import pytest
import torch
from strata.train import dist
from strata.train.metrics import mfu_of


@pytest.fixture
def gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)

    def world(n, local_rank):
        monkeypatch.setenv("WORLD_SIZE", str(n))
        monkeypatch.setenv("LOCAL_RANK", str(local_rank))

    return world


@pytest.mark.parametrize("name", ["auto", "cuda"])
def test_each_process_takes_gpu_local_rank(gpus, name):
    gpus(8, 5)
    assert dist.pick_device(name) == torch.device("cuda", 5)


def test_a_named_gpu_is_for_one_process(gpus):
    gpus(1, 0)
    assert dist.pick_device("cuda:3") == torch.device("cuda", 3)
    gpus(2, 1)
    with pytest.raises(ValueError, match=r"train.device = 'cuda:3' with 2 processes"):
        dist.pick_device("cuda:3")


def test_no_cuda_here(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert dist.pick_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA is not available"):
        dist.pick_device("cuda")


def test_mfu_is_per_device():
    peak, flops = 989e12, 6 * 124e6
    one = mfu_of(flops, 400_000, 1, peak)
    assert one == pytest.approx(flops * 400_000 / peak)
    assert mfu_of(flops, 8 * 400_000, 8, peak) == pytest.approx(one)  # 8 GPUs, same each
    assert mfu_of(flops, 400_000, 1, None) is None
