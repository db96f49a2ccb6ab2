"""Two CPU processes (torchrun, gloo, FSDP2) train exactly like one process.

One 1-process and one 2-process run (8 steps, debug model) are shared by the tests:
same per-step losses, grad norms and validation losses; the same published weights
(identical at step 0, so initialisation does not depend on the world size); and a
resume checkpoint written by either continues on the other world size with the losses
of the uninterrupted run. Resuming at step 4 from a copy of a finished run is exactly an
interruption after step 4: the checkpoint holds everything the run had at that step.
"""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from tests.train.runs import read_metrics, run_ok, train_cmd

STEPS = 8


def run(nproc, dataset, out, name, *extra):
    """Train run `name` under `out` with `nproc` processes; returns its stderr.

    Micro-batches of 1 make 2 processes accumulate 2 each (FSDP reduces after the last
    only); 3 validation batches do not split evenly over 2 processes.
    """
    values = {"run.name": name, "train.max_steps": STEPS}
    values |= {"train.micro_batch_size": 1, "train.eval_windows": 3}
    return run_ok(train_cmd(nproc, dataset, out, *extra, **values))


@pytest.fixture(scope="module")
def runs(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    run(1, tiny_dataset, out, "one")
    run(2, tiny_dataset, out, "two")
    return out


def assert_same_losses(a, b):
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        assert ra["loss"] == pytest.approx(rb["loss"], abs=1e-4), ra["step"]
        assert ra["grad_norm"] == pytest.approx(rb["grad_norm"], rel=1e-3), ra["step"]
        if ra.get("val_loss") is not None:
            assert ra["val_loss"] == pytest.approx(rb["val_loss"], abs=1e-4), ra["step"]


def test_two_processes_match_one(runs):
    one, two = read_metrics(runs / "one"), read_metrics(runs / "two")
    assert [r["step"] for r in two] == list(range(1, STEPS + 1))
    assert two[5]["val_loss"] is not None  # eval_every = 6
    assert_same_losses(one, two)
    # both consumed the same global batches, whatever the split over processes
    assert [r["batch_sha256"] for r in one] == [r["batch_sha256"] for r in two]
    manifest = json.loads((runs / "two" / "checkpoints" / "manifest.json").read_text())
    assert [r["step"] for r in manifest["revisions"]] == [0, 1, 2, 4, 8]
    assert (runs / "two" / "resume" / "latest").read_text().strip() == "step-00000008"


def test_published_weights_match_one_process(runs):
    for step in (0, 1, 2, 4, 8):
        a = load_file(runs / "one" / "checkpoints" / f"step{step}" / "model.safetensors")
        b = load_file(runs / "two" / "checkpoints" / f"step{step}" / "model.safetensors")
        assert a.keys() == b.keys()
        for name, tensor in a.items():
            if step == 0:  # initialisation is independent of the world size, bit for bit
                assert torch.equal(tensor, b[name]), name
            else:  # reductions add in another order
                torch.testing.assert_close(tensor, b[name], atol=1e-5, rtol=1e-4, msg=name)


def resume_copy(runs, source, name, step=4):
    """A copy of run `source` as it was right after the resume checkpoint of `step`."""
    dest = runs / name
    shutil.copytree(runs / source, dest)
    for later in (dest / "resume").glob("step-*"):
        if int(later.name.split("-")[1]) > step:
            shutil.rmtree(later)
    (dest / "resume" / "latest").write_text(f"step-{step:08d}\n")
    shutil.rmtree(dest / "checkpoints" / f"step{STEPS}")
    return dest


@pytest.mark.parametrize(
    ("source", "nproc", "extra"),
    [
        ("two", 1, ()),  # FSDP shards -> one process
        # one process -> HSDP (2 replicas x 1 shard), blocks kept gathered after forward,
        # activation checkpointing inside FSDP units
        (
            "one",
            2,
            (
                "train.dp_replicate=2",
                "train.reshard_after_forward=false",
                "train.activation_checkpointing='selective'",
            ),
        ),
    ],
)
def test_resume_across_world_sizes(runs, tiny_dataset, source, nproc, extra):
    name = f"{source}-on-{nproc}"
    dest = resume_copy(runs, source, name)
    stderr = run(nproc, tiny_dataset, runs, name, *extra)
    assert f"resumed from {dest / 'resume' / 'step-00000004'} at step 4" in stderr
    resumed = read_metrics(dest)
    assert [r["step"] for r in resumed] == list(range(1, STEPS + 1))
    assert_same_losses(read_metrics(runs / source)[4:], resumed[4:])
    a = load_file(runs / source / "checkpoints" / f"step{STEPS}" / "model.safetensors")
    b = load_file(dest / "checkpoints" / f"step{STEPS}" / "model.safetensors")
    for key, tensor in a.items():
        torch.testing.assert_close(tensor, b[key], atol=1e-5, rtol=1e-4, msg=key)


def test_tied_embeddings_match_one_process(tiny_dataset, tmp_path):
    """The tied lm_head lives in the root FSDP unit and stays tied through init and steps."""
    extra = ("model.tie_embeddings=true", "train.max_steps=2", "train.eval_every=0")
    run(1, tiny_dataset, tmp_path, "one", *extra)
    run(2, tiny_dataset, tmp_path, "two", *extra)
    assert_same_losses(read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two"))
    for step in (0, 2):
        a = load_file(tmp_path / "one" / "checkpoints" / f"step{step}" / "model.safetensors")
        b = load_file(tmp_path / "two" / "checkpoints" / f"step{step}" / "model.safetensors")
        assert "lm_head.weight" not in b  # tied: written once, as the embedding
        assert a.keys() == b.keys()
        for name, tensor in a.items():
            torch.testing.assert_close(tensor, b[name], atol=1e-5, rtol=1e-4, msg=name)


def test_bf16_mixed_precision_tracks_fp32(runs, tiny_dataset):
    """FSDP2's MixedPrecisionPolicy on 2 gloo ranks: bf16 parameters in compute and fp32
    gradient reduction (the defaults with train.dtype = bf16). The losses follow the
    fp32 one-process run to bf16 precision, yet differ from it (so bf16 really ran);
    the sharded master weights, and so the published ones, stay fp32."""
    run(2, tiny_dataset, runs, "bf16", "train.dtype=bf16")
    fp32, bf16 = read_metrics(runs / "one"), read_metrics(runs / "bf16")
    assert [r["step"] for r in bf16] == list(range(1, STEPS + 1))
    rel = [abs(a["loss"] - b["loss"]) / a["loss"] for a, b in zip(fp32, bf16, strict=True)]
    assert 5e-5 < max(rel) < 1e-2, rel  # fp32 on 1 vs 2 ranks differs by ~1e-6
    weights = load_file(runs / "bf16" / "checkpoints" / f"step{STEPS}" / "model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.float32}
    reference = load_file(runs / "one" / "checkpoints" / f"step{STEPS}" / "model.safetensors")
    for name, tensor in reference.items():
        torch.testing.assert_close(weights[name], tensor, atol=2e-3, rtol=5e-2, msg=name)


def test_published_weights_are_byte_identical_without_clipping(tiny_dataset, tmp_path):
    """Revisions from 2 ranks equal a 1-rank run's bit for bit when the two add the same
    numbers: each rank holds one micro-batch of 2 rows, the single process two of them
    (g0 + g1 either way; FSDP's halving is exact), and no clipping (the sharded gradient
    norm sums its squares in another order, so a clipped run agrees to ~1e-6 instead)."""
    values = {"train.max_steps": 4, "train.grad_clip": 0.0, "train.eval_every": 0}
    for n in (1, 2):
        run_ok(train_cmd(n, tiny_dataset, tmp_path, **{"run.name": f"n{n}", **values}))
    for step in (0, 1, 2, 4):
        a = load_file(tmp_path / "n1" / "checkpoints" / f"step{step}" / "model.safetensors")
        b = load_file(tmp_path / "n2" / "checkpoints" / f"step{step}" / "model.safetensors")
        assert a.keys() == b.keys()
        assert [k for k in a if not torch.equal(a[k], b[k])] == [], step
    first = load_file(tmp_path / "n1" / "checkpoints" / "step0" / "model.safetensors")
    assert not any(torch.equal(first[k], a[k]) for k in a)  # training moved every tensor


def test_a_mixture_trains_the_same_batches_on_two_processes(tiny_dataset, tmp_path):
    """A two-source mixture: 1 and 2 processes train the same global batches (digests)
    and write the same data ledger, byte for byte."""
    sources = (f"data.sources=[{{dataset = '{tiny_dataset}', weight = 0.75, name = 'a'}}, "
               f"{{dataset = '{tiny_dataset}', weight = 0.25, name = 'b'}}]")  # fmt: skip
    extra = (sources, "train.max_steps=4", "train.eval_every=0", "log.every=1")
    run(1, tiny_dataset, tmp_path, "one", *extra)
    run(2, tiny_dataset, tmp_path, "two", *extra)
    one, two = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    assert [r["batch_sha256"] for r in one] == [r["batch_sha256"] for r in two]
    assert len(one) == 4
    ledgers = [sorted((tmp_path / n / "data_ledger").iterdir()) for n in ("one", "two")]
    assert [p.name for p in ledgers[0]] == [p.name for p in ledgers[1]]
    for a, b in zip(*ledgers, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name
