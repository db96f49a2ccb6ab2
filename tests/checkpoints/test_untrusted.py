"""Untrusted checkpoints: planted pickles are refused and never run, corrupt files and
paths that leave their folder are one-line errors naming the file.

Every payload here is a real one: unpickling it runs `touch MARKER` (checked once with
plain `pickle.loads`), and each test asserts the marker never appears.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from strata.checkpoints import safe_dcp
from strata.checkpoints.export import export_hf, import_hf, load_any, resolve_resume
from strata.checkpoints.load import load, verify_revision
from strata.checkpoints.publish import publish_revision
from strata.checkpoints.resume import latest_resume, save_resume
from strata.model import GPT, ModelConfig
from strata.run import Manifest
from strata.run.config import OptimConfig
from strata.train.optim import build_optimizer
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


class Payload:
    """Unpickling this runs a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, by relative path."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    path = tmp_path / "PWNED"
    pickle.loads(pickle.dumps(Payload(path)))  # the payload is real: it creates the marker
    assert path.exists()
    path.unlink()
    return path


def trained(seed: int = 0, **overrides) -> tuple[GPT, torch.optim.Optimizer]:
    """A debug model after one AdamW step (so the optimizer has state)."""
    torch.manual_seed(seed)
    model = GPT(ModelConfig.from_preset("debug", vocab_size=64, **overrides))
    model.init_weights(seed=seed)
    optimizer = build_optimizer(model, OptimConfig())
    tokens = torch.randint(0, 64, (2, 9))
    model(tokens[:, :-1], tokens[:, 1:]).loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return model, optimizer


def resume_state(model: GPT, optimizer: torch.optim.Optimizer) -> dict:
    model_sd, optim_sd = get_state_dict(model, optimizer)
    return {"model": model_sd, "optim": optim_sd, "rng": {"cpu": torch.get_rng_state()}}


@pytest.fixture
def resume_ckpt(tmp_path: Path) -> Path:
    """A run folder's resume checkpoint written by checkpoints/resume.py's writer."""
    model, optimizer = trained()
    info = {"tokens": 8, "model_config": model.config.to_dict()}
    return save_resume(tmp_path / "run" / "resume", 1, model, optimizer, info)


@pytest.fixture
def revision(tmp_path: Path) -> Path:
    model, _ = trained()
    return publish_revision(tmp_path / "run" / "checkpoints", 4, model, model.config, None, {})


def test_safe_dcp_round_trips_a_resume_checkpoint(resume_ckpt: Path) -> None:
    saved_model, saved_optim = trained()
    model, optimizer = trained(seed=1)
    state = resume_state(model, optimizer)
    safe_dcp.load(state, resume_ckpt, no_dist=True, model_config=model.config.to_dict())
    set_state_dict(
        model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"]
    )
    for name, tensor in saved_model.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    a, b = saved_optim.state_dict(), optimizer.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for key, value in a["state"].items():
        assert all(torch.equal(value[k], b["state"][key][k]) for k in value), key


def test_planted_metadata_pickle_is_refused_and_never_run(resume_ckpt: Path, marker: Path) -> None:
    (resume_ckpt / ".metadata").write_bytes(pickle.dumps(Payload(marker)))
    model, optimizer = trained()
    with pytest.raises(safe_dcp.UnsafeCheckpointError, match=r"\.metadata: refused .*system"):
        safe_dcp.load(resume_state(model, optimizer), resume_ckpt, no_dist=True)
    with pytest.raises(ValueError, match=r"\.metadata: refused"):
        export_hf(resume_ckpt.parent.parent, resume_ckpt.parent.parent / "hf")
    with pytest.raises(ValueError, match=r"\.metadata: refused"):
        load_any(resume_ckpt.parent.parent)
    assert not marker.exists()


def test_planted_value_pickle_is_refused_and_never_run(tmp_path: Path, marker: Path) -> None:
    """DCP's own planner would run this (torch.load(weights_only=False) on non-tensors)."""
    model, optimizer = trained()
    state = resume_state(model, optimizer)
    state["optim"]["param_groups"][0]["lr"] = Payload(marker)
    dcp.save(state, checkpoint_id=str(tmp_path / "ckpt"), no_dist=True)  # writing runs nothing
    assert not marker.exists()
    with pytest.raises(safe_dcp.UnsafeCheckpointError, match=r"param_groups\.0\.lr.*system"):
        safe_dcp.load(resume_state(*trained()), tmp_path / "ckpt", no_dist=True)
    assert not marker.exists()


def rewrite_metadata(ckpt: Path, edit) -> None:
    """Edit our own (trusted) metadata and write it back."""
    metadata = pickle.loads((ckpt / ".metadata").read_bytes())
    edit(metadata)
    (ckpt / ".metadata").write_bytes(pickle.dumps(metadata))


def test_metadata_paths_stay_inside_the_checkpoint(resume_ckpt: Path) -> None:
    def escape(metadata):
        for info in metadata.storage_data.values():
            info.relative_path = "../../outside.distcp"

    rewrite_metadata(resume_ckpt, escape)
    with pytest.raises(safe_dcp.UnsafeCheckpointError, match=r"'\.\./\.\./outside\.distcp'"):
        safe_dcp.load(resume_state(*trained()), resume_ckpt, no_dist=True)


def test_truncated_resume_files_name_the_file(resume_ckpt: Path) -> None:
    data = resume_ckpt / "__0_0.distcp"
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"__0_0\.distcp: truncated: 1000 bytes"):
        safe_dcp.load(resume_state(*trained()), resume_ckpt, no_dist=True)
    meta = resume_ckpt / ".metadata"
    meta.write_bytes(meta.read_bytes()[:50])
    with pytest.raises(ValueError, match=r"\.metadata: not a readable DCP metadata file"):
        safe_dcp.load(resume_state(*trained()), resume_ckpt, no_dist=True)


def test_incompatible_model_config_is_refused(resume_ckpt: Path) -> None:
    before = snapshot(resume_ckpt)
    deeper = trained(n_layers=3)
    with pytest.raises(ValueError, match=r"another model config.*n_layers 2 -> 3"):
        safe_dcp.load(resume_state(*deeper), resume_ckpt, model_config=deeper[0].config.to_dict())
    with pytest.raises(ValueError, match=r"model\.layers\.2\.\S+ is not in the checkpoint"):
        safe_dcp.load(resume_state(*deeper), resume_ckpt, no_dist=True)  # shapes alone
    shallow = trained(n_layers=1)[0]
    with pytest.raises(ValueError, match=r"also holds model\.layers\.1\."):
        safe_dcp.load({"model": shallow.state_dict()}, resume_ckpt, no_dist=True)
    theta = trained(rope_theta=500.0)[0]  # same shapes, different function
    with pytest.raises(ValueError, match=r"rope_theta 10000\.0 -> 500\.0"):
        safe_dcp.load({"model": theta.state_dict()}, resume_ckpt, True, theta.config.to_dict())
    assert snapshot(resume_ckpt) == before


def test_pickled_weights_are_never_loaded(revision: Path, marker: Path, tmp_path: Path) -> None:
    torch.save({"w": Payload(marker)}, revision / "pytorch_model.bin")  # next to safetensors
    load(revision)
    load_any(revision)
    hf = tmp_path / "hf"
    shutil.copytree(revision, hf)
    (hf / "model.safetensors").unlink()  # instead of safetensors
    shutil.copy(hf / "pytorch_model.bin", hf / "model.bin")
    for read in (load, load_any):
        with pytest.raises(FileNotFoundError, match=r"missing; model\.bin, pytorch_model\.bin not"):
            read(hf)
    with pytest.raises(ValueError, match=r"lists 'model\.safetensors', which is not in the folder"):
        export_hf(hf, tmp_path / "exported")
    with pytest.raises(ValueError, match="reads safetensors only"):
        import_hf(hf, tmp_path / "imported")
    from tests.train.test_cli import strata

    result = strata("generate", str(hf), "--prompt", "x")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "pickled weights are refused" in result.stderr
    assert not marker.exists()


def test_corrupt_safetensors_names_the_file(revision: Path, tmp_path: Path) -> None:
    weights = revision / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # truncated
    with pytest.raises(ValueError, match=r"model\.safetensors: not a readable safetensors file"):
        load(revision)
    with pytest.raises(ValueError, match=r"model\.safetensors: sha256 differs"):
        export_hf(revision, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    weights.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}  ")
    with pytest.raises(ValueError, match=r"model\.safetensors: not a readable safetensors file"):
        load(revision)


def test_names_from_run_files_stay_inside_the_run(revision: Path, resume_ckpt: Path) -> None:
    ckpt = revision.parent
    for bad in ("../x", "/etc", ".step4.tmp", "..", "a/b"):
        (ckpt / "manifest.json").write_text(f'{{"revisions": [{{"revision": "{bad}"}}]}}')
        with pytest.raises(ValueError, match=r"manifest\.json: revision .* inside"):
            Manifest.read(ckpt)
    strata_json = revision / "strata.json"
    strata_json.write_text(strata_json.read_text().replace('"config.json"', '"../config.json"'))
    with pytest.raises(ValueError, match=r"lists '\.\./config\.json', which is not in the folder"):
        verify_revision(revision)
    resume_dir = resume_ckpt.parent
    for bad in ("../../etc", "/etc", "step-99999999", ""):
        (resume_dir / "latest").write_text(bad + "\n")
        with pytest.raises(ValueError, match="is not a complete checkpoint"):
            latest_resume(resume_dir)
        with pytest.raises(ValueError, match="is not a complete checkpoint"):
            resolve_resume(resume_dir.parent)


def test_a_linked_weights_file_is_refused_everywhere(revision: Path, tmp_path: Path) -> None:
    """A revision whose model.safetensors links to a file elsewhere is read by nothing."""
    from strata.checkpoints.verify import verify

    elsewhere = tmp_path / "elsewhere.safetensors"
    shutil.move(revision / "model.safetensors", elsewhere)
    (revision / "model.safetensors").symlink_to(elsewhere)
    with pytest.raises(ValueError, match=r"model\.safetensors: a symbolic link \(to .*elsewhere"):
        load(revision)
    with pytest.raises(ValueError, match="a symbolic link"):
        export_hf(revision, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    kinds = {p.kind for p in verify(revision.parent)}
    assert "symlink" in kinds  # reported, never hashed through the link
    hf = tmp_path / "hf"  # a sharded Hugging Face folder with one shard linked out
    hf.mkdir()
    (hf / "model-00001-of-00001.safetensors").symlink_to(elsewhere)
    (hf / "model.safetensors.index.json").write_text(
        '{"weight_map": {"x": "model-00001-of-00001.safetensors"}}'
    )
    (hf / "config.json").write_text((revision / "config.json").read_text())
    with pytest.raises(ValueError, match="a symbolic link"):
        import_hf(hf, tmp_path / "imported")


@pytest.mark.parametrize("key, value", [("vocab_size", 10**12), ("d_model", 2**30)])
def test_absurd_sizes_are_refused_before_allocating(revision: Path, tmp_path: Path, key, value):
    """A config that describes a far larger model than its weights fails in one line,
    before anything is allocated (on a bigger machine it would first swap the host)."""
    import json

    meta_path = revision / "strata.json"
    meta = json.loads(meta_path.read_text())
    config = meta["model_config"] | {key: value}
    if key == "d_model":
        config |= {"n_heads": 1, "n_kv_heads": 1}
    meta_path.write_text(json.dumps(meta | {"model_config": config}))
    with pytest.raises(
        ValueError, match=r"step4: describes a model of .* GB in fp32, but its weights hold"
    ):
        load(revision)
    hf = tmp_path / "hf"
    hf.mkdir()
    shutil.copy(revision / "model.safetensors", hf / "model.safetensors")
    hf_config = json.loads((revision / "config.json").read_text())
    hf_key = {"vocab_size": "vocab_size", "d_model": "hidden_size"}[key]
    (hf / "config.json").write_text(json.dumps(hf_config | {hf_key: value, "head_dim": None}))
    with pytest.raises(
        ValueError, match=r"config.json: describes a model of .* GB in fp32, but its weights"
    ):
        import_hf(hf, tmp_path / "imported")
    assert not (tmp_path / "imported").exists()


def _plant(path: Path, kind: str, tmp_path: Path) -> None:
    """Replace `path` by a FIFO, a link to /dev/zero, a link to a file outside, or a
    file past the metadata bound."""
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev-zero":
        path.symlink_to("/dev/zero")
    elif kind == "link-out":
        (tmp_path / "outside.json").write_text("{}")
        path.symlink_to(tmp_path / "outside.json")
    else:  # huge: a regular file over the bound (monkeypatched small)
        path.write_text('{"pad": "' + "x" * 5000 + '"}')


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "link-out", "huge"])
def test_special_metadata_files_are_never_read(revision, tmp_path, monkeypatch, kind):
    """A FIFO would block a reader forever and /dev/zero never ends: strata.json,
    config.json and manifest.json are read only as regular files within a size bound;
    `verify` reports them and never hangs (an alarm fails the test instead)."""
    import signal

    import strata.run.jsonfile as jsonfile
    from strata.checkpoints.verify import verify

    monkeypatch.setattr(jsonfile.read_object, "__defaults__", (4096,))  # the bound, smaller
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("a reader blocked"))
    signal.alarm(20)
    saved_meta = (revision / "strata.json").read_bytes()
    try:
        hf = export_hf(revision, tmp_path / "hf")
        (hf / "strata.json").unlink()  # a plain Hugging Face folder: config.json is read
        for folder, name in ((revision, "strata.json"), (hf, "config.json")):
            saved = (folder / name).read_bytes()
            _plant(folder / name, kind, tmp_path)
            with pytest.raises(
                ValueError, match=f"{name}: (a symbolic|not a regular|.*bytes, more)"
            ):
                load(folder)
            (folder / name).unlink()
            (folder / name).write_bytes(saved)
        _plant(revision / "strata.json", kind, tmp_path)
        assert "bad-metadata" in {p.kind for p in verify(revision.parent)}
        (revision / "strata.json").unlink()
        (revision / "strata.json").write_bytes(saved_meta)
        manifest = revision.parent / "manifest.json"
        _plant(manifest, kind, tmp_path)
        bad = [p.detail for p in verify(revision.parent) if p.kind == "bad-manifest"]
        assert len(bad) == 1 and re.match("(a symbolic|not a regular|.*bytes, more)", bad[0])
    finally:
        signal.alarm(0)


def test_dataset_files_are_regular_files_inside_it(tmp_path: Path) -> None:
    """A shard or the tokenizer copy of a dataset linked to a file outside is refused."""
    import json as _json

    from strata.tokenizer import TokenShards, prepare, train_tokenizer

    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(_json.dumps({"text": f"doc {i} " * 20}) + "\n" for i in range(40)))
    train_tokenizer([corpus], tmp_path / "tok", vocab_size=300)
    data = tmp_path / "data"
    prepare([corpus], data, tmp_path / "tok", val_fraction=0.2, progress=False)
    shard = data / "train-00000.bin"
    TokenShards(data)
    shutil.move(shard, tmp_path / "elsewhere.bin")
    shard.symlink_to(tmp_path / "elsewhere.bin")
    with pytest.raises(ValueError, match=r"train-00000\.bin: a symbolic link .*a dataset's files"):
        TokenShards(data)
    shard.unlink()
    shutil.move(tmp_path / "elsewhere.bin", shard)
    tok = data / "tokenizer" / "tokenizer.json"
    shutil.move(tok, tmp_path / "tok.json")
    tok.symlink_to(tmp_path / "tok.json")
    with pytest.raises(ValueError, match=r"tokenizer\.json: a symbolic link"):
        TokenShards(data)


def test_a_hugging_face_hub_cache_snapshot_is_imported(revision: Path, tmp_path: Path) -> None:
    """The one link that is followed: `REPO/snapshots/REV/NAME -> ../../blobs/HASH`, how
    huggingface_hub stores downloads; a link from a snapshot to elsewhere is not."""
    hf = export_hf(revision, tmp_path / "hf")
    repo = tmp_path / "models--org--name"
    snapshot_dir, blobs = repo / "snapshots" / "abc123", repo / "blobs"
    snapshot_dir.mkdir(parents=True)
    blobs.mkdir()
    for file in sorted(hf.iterdir()):
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        shutil.copy(file, blobs / digest)
        (snapshot_dir / file.name).symlink_to(Path("../../blobs") / digest)
    imported = import_hf(snapshot_dir, tmp_path / "imported")
    a, b = load(revision).state_dict(), load(imported).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    weights = snapshot_dir / "model.safetensors"
    target = blobs / os.readlink(weights).split("/")[-1]
    shutil.move(target, tmp_path / "stray")
    weights.unlink()
    weights.symlink_to(tmp_path / "stray")  # out of the repository's blobs: refused
    with pytest.raises(ValueError, match="a symbolic link"):
        import_hf(snapshot_dir, tmp_path / "imported2")
