"""The streaming safetensors writer against the safetensors package, and the publisher's
promise that a streamed revision holds one output's inputs at a time."""

import json
import struct
import weakref

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from strata.checkpoints.publish import weights_plan, write_weights
from strata.checkpoints.safetensors_stream import StreamWriter
from strata.model import GPT, ModelConfig

TENSORS = {
    "a.weight": torch.randn(5, 3),
    "b.bf16": torch.randn(4, 6).to(torch.bfloat16),
    "c.ids": torch.arange(7, dtype=torch.int64),
    "d.scalar": torch.tensor(2.5),
    "e.empty": torch.zeros(0, 4),
    "f.transposed": torch.randn(3, 8).T,  # not contiguous
}


def stream(path, tensors, metadata=None):
    specs = [(k, v.dtype, tuple(v.shape)) for k, v in tensors.items()]
    writer = StreamWriter(path, specs, metadata)
    for name, tensor in tensors.items():
        writer.write(name, tensor)
    writer.close()


def test_the_safetensors_package_reads_it_back(tmp_path):
    stream(tmp_path / "s.safetensors", TENSORS, {"format": "pt"})
    ours = load_file(tmp_path / "s.safetensors")
    save_file({k: v.contiguous() for k, v in TENSORS.items()}, tmp_path / "r.safetensors")
    theirs = load_file(tmp_path / "r.safetensors")
    assert ours.keys() == theirs.keys() == TENSORS.keys()
    for name, tensor in TENSORS.items():
        assert ours[name].dtype == tensor.dtype and torch.equal(ours[name], tensor), name
        assert torch.equal(ours[name], theirs[name])
    with safe_open(tmp_path / "s.safetensors", "pt") as f:
        assert f.metadata() == {"format": "pt"}
    raw = (tmp_path / "s.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0 and json.loads(raw[8 : 8 + n])["a.weight"]["dtype"] == "F32"


def test_out_of_order_misshapen_or_missing_tensors_are_refused(tmp_path):
    specs = [("x", torch.float32, (2, 2)), ("y", torch.float32, (3,))]
    writer = StreamWriter(tmp_path / "w.safetensors", specs)
    with pytest.raises(ValueError, match=r"expected x torch.float32 \(2, 2\), got y"):
        writer.write("y", torch.zeros(3))
    with pytest.raises(ValueError, match=r"expected x torch.float32 \(2, 2\), got x .*\(2, 3\)"):
        writer.write("x", torch.zeros(2, 3))
    writer.write("x", torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"never written: \['y'\]"):
        writer.close()


@pytest.mark.parametrize("preset", ["debug", "pythia-14m", "debug-moe"])
def test_a_streamed_revision_holds_one_outputs_inputs_at_a_time(tmp_path, preset):
    """Each fetched input is freed once its last output is written: at most the three
    q/k/v of GPT-NeoX's fused projection are alive at once (one tensor for Llama and
    OLMoE, whose experts come from one stacked tensor). The file equals save_file's."""
    model = GPT(ModelConfig.from_preset(preset))
    model.init_weights(seed=0)
    state = model.state_dict()
    alive, peak = [0], [0]

    def fetch(name):
        tensor = state[name].detach().clone()  # a fresh copy, as a gather gives
        alive[0] += 1
        peak[0] = max(peak[0], alive[0])
        weakref.finalize(tensor, lambda: alive.__setitem__(0, alive[0] - 1))
        return tensor

    plan = weights_plan(model.config, list(state))
    write_weights(tmp_path / "m.safetensors", plan, state, fetch, {"format": "pt"})
    assert alive[0] == 0 and peak[0] == (3 if preset.startswith("pythia") else 1)
    written = load_file(tmp_path / "m.safetensors")
    expected = {name: fn(*(state[n] for n in names)) for name, names, fn in plan}
    assert written.keys() == expected.keys()
    assert all(torch.equal(written[k], expected[k]) for k in expected)


@pytest.fixture
def one_rank_fsdp():
    """A world of one gloo process, so that fully_shard gives DTensor parameters."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo", rank=0, world_size=1, store=dist.HashStore())
    try:
        mesh = init_device_mesh("cpu", (1,))
        model = GPT(ModelConfig.from_preset("pythia-14m"))
        model.init_weights(seed=0)
        reference = {k: v.clone() for k, v in model.state_dict().items()}
        for block in model.layers:
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        yield model, reference
    finally:
        dist.destroy_process_group()


def test_a_large_sharded_model_is_streamed_not_staged(tmp_path, one_rank_fsdp):
    from strata.checkpoints.publish import Publisher
    from torch.distributed.tensor import DTensor

    model, reference = one_rank_fsdp
    assert any(isinstance(p, DTensor) for p in model.parameters())
    small = Publisher(tmp_path / "staged", background=True, max_staged_gb=8.0)
    large = Publisher(tmp_path / "streamed", background=True, max_staged_gb=0.01)
    assert small.stages(model) and not large.stages(model)  # 14M params = 0.056 GB
    assert not Publisher(tmp_path / "x", background=False).stages(model)
    large.publish(3, model, model.config, None, {})
    assert large.pending is None  # written before publish returned
    small.publish(3, model, model.config, None, {})
    small.close()
    large.close()
    streamed = load_file(tmp_path / "streamed" / "step3" / "model.safetensors")
    staged = load_file(tmp_path / "staged" / "step3" / "model.safetensors")
    assert streamed.keys() == staged.keys()
    assert all(torch.equal(streamed[k], staged[k]) for k in staged)
    fused = streamed["gpt_neox.layers.0.attention.query_key_value.weight"]
    q = reference["layers.0.attn.wq.weight"]
    assert torch.equal(fused.view(4, 3, -1, 128)[:, 0].reshape(q.shape), q)
