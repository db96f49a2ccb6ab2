"""Publishing in the background (`publish.async`, `checkpoints.publish.Publisher`).

Training waits only for the copy of the weights into CPU memory; the write, the hashes,
the rename and the manifest update happen in a thread. What is checked: the revision
holds the weights of its step even when training changes them during the write, a
failed write leaves nothing behind and surfaces at the next wait, a resume checkpoint
of a later step waits for the revision, and a run gives the same revisions either way.
"""

import errno
import json
import shutil
import threading
import time

import pytest
import torch
from safetensors.torch import load_file
from strata.checkpoints import publish
from strata.checkpoints.publish import Publisher
from strata.checkpoints.resume import ResumeWriter
from strata.checkpoints.safetensors_stream import StreamWriter
from strata.model import GPT, ModelConfig
from strata.run import Manifest
from strata.train.trainer import Trainer


@pytest.fixture
def model():
    m = GPT(ModelConfig.from_preset("debug"))
    m.init_weights(seed=0)
    return m


def tensors(folder):
    return load_file(str(folder / "model.safetensors"))


def test_the_write_runs_behind_training_and_keeps_the_steps_weights(tmp_path, model, monkeypatch):
    publish.publish_revision(tmp_path / "sync", 4, model, model.config, None, {})
    started, release = threading.Event(), threading.Event()
    original = publish.write_revision_files

    def held(*args, **kwargs):
        started.set()
        assert release.wait(30)
        return original(*args, **kwargs)

    monkeypatch.setattr(publish, "write_revision_files", held)
    publisher = Publisher(tmp_path / "async", background=True)
    publisher.publish(4, model, model.config, None, {})  # returns with the write held
    assert started.wait(30) and publisher.pending is not None
    assert not (tmp_path / "async" / "step4").exists()
    with torch.no_grad():  # training goes on and changes the weights
        for p in model.parameters():
            p.add_(1.0)
    release.set()
    publisher.close()
    assert publisher.pending is None
    ours, reference = tensors(tmp_path / "async" / "step4"), tensors(tmp_path / "sync" / "step4")
    assert ours.keys() == reference.keys()
    assert all(torch.equal(ours[k], reference[k]) for k in ours)
    assert Manifest.read(tmp_path / "async").revisions[0].revision == "step4"


def test_a_failed_background_write_leaves_nothing_and_is_raised_at_the_next_wait(
    tmp_path, model, monkeypatch
):
    publisher = Publisher(tmp_path, background=True)
    publisher.publish(1, model, model.config, None, {})
    publisher.wait()
    manifest = (tmp_path / "manifest.json").read_text()

    def full(self, name, tensor):
        self.file.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(StreamWriter, "write", full)
    publisher.publish(2, model, model.config, None, {})  # the error stays in the thread
    with pytest.raises(OSError, match="No space left"):
        publisher.wait()
    assert (tmp_path / "manifest.json").read_text() == manifest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "step1"]
    publisher.close()


def test_async_and_sync_runs_publish_the_same_revisions(tiny_config, monkeypatch):
    events = []
    write, save = Publisher._write, ResumeWriter.save

    def logged_write(self, tmp, final, *args):
        time.sleep(0.2)  # a slow disk: training runs ahead of the write
        write(self, tmp, final, *args)
        events.append(("revision", int(final.name[4:])))

    def logged_save(self, step, *args):
        events.append(("resume", step))
        return save(self, step, *args)

    monkeypatch.setattr(Publisher, "_write", logged_write)
    monkeypatch.setattr(ResumeWriter, "save", logged_save)
    runs = {}
    for mode in ("true", "false"):
        cfg = tiny_config(
            **{"run.name": f"pub-{mode}", "publish.async": mode, "checkpoint.every": 3}
        )
        trainer = Trainer(cfg)
        assert trainer.publisher.background == (mode == "true")
        events.clear()
        trainer.fit()
        runs[mode] = (cfg.run_dir / "checkpoints", list(events))
    (ckpt_a, events_a), (ckpt_s, _) = runs["true"], runs["false"]
    entries = Manifest.read(ckpt_a).revisions
    assert entries == Manifest.read(ckpt_s).revisions
    assert [e.step for e in entries] == [0, 1, 2, 4, 8, 12]
    for entry in entries:
        a, s = tensors(ckpt_a / entry.revision), tensors(ckpt_s / entry.revision)
        assert all(torch.equal(a[k], s[k]) for k in s)
        meta = json.loads((ckpt_a / entry.revision / "strata.json").read_text())
        assert meta["step"] == entry.step
    # every revision of an earlier step is complete before a resume checkpoint starts
    for i, (kind, step) in enumerate(events_a):
        if kind == "resume":
            done = {s for k, s in events_a[:i] if k == "revision"}
            assert {s for s in (0, 1, 2, 4, 8, 12) if s < step} <= done, (step, events_a)


def test_a_revision_cut_short_by_a_kill_is_rewritten_on_resume(tiny_config):
    """A kill while the last revision was still being written in the background leaves
    `resume/latest` at its step without the folder: the rerun writes it again, with the
    same weights, losses and manifest entry."""
    cfg = tiny_config(**{"run.name": "cut", "train.max_steps": 8})
    Trainer(cfg).fit()
    ckpts = cfg.run_dir / "checkpoints"
    before = json.loads((ckpts / "step8" / "strata.json").read_text())
    weights, manifest = tensors(ckpts / "step8"), Manifest.read(ckpts)
    assert before["last_batch_loss"] is not None
    shutil.rmtree(ckpts / "step8")  # the kill: folder and manifest entry never written
    cut = Manifest(ckpts, [r for r in manifest.revisions if r.step != 8])
    cut.write()
    again = Trainer(tiny_config(**{"run.name": "cut", "train.max_steps": 8}))
    assert again.step == 8
    again.fit()
    after = json.loads((ckpts / "step8" / "strata.json").read_text())
    assert Manifest.read(ckpts) == manifest
    assert {k: after[k] for k in ("last_batch_loss", "val_loss", "tokens", "parent", "data")} == {
        k: before[k] for k in ("last_batch_loss", "val_loss", "tokens", "parent", "data")
    }
    again_weights = tensors(ckpts / "step8")
    assert all(torch.equal(weights[k], again_weights[k]) for k in weights)
