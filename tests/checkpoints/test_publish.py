"""Published revisions: schedule, manifest, metadata, and loading in transformers."""

import hashlib
import json
from pathlib import Path

import pytest
import torch
from strata.checkpoints import load, verify_revision
from strata.train.trainer import Trainer


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
    from strata.run.config import load_config

    from tests.conftest import tiny_overrides

    out = tmp_path_factory.mktemp("publish")
    cfg = load_config(
        "configs/debug.toml",
        tiny_overrides(
            tiny_dataset,
            out,
            **{"run.name": "pub", "publish.extra_steps": "[3]", "model.tie_embeddings": "false"},
        ),
    )
    trainer = Trainer(cfg)
    trainer.fit()
    return trainer


def test_revisions_follow_the_schedule(trained):
    ckpts = trained.run_dir / "checkpoints"
    manifest = json.loads((ckpts / "manifest.json").read_text())
    steps = [r["step"] for r in manifest["revisions"]]
    assert steps == [0, 1, 2, 3, 4, 8, 12]
    assert sorted(p.name for p in ckpts.iterdir() if p.is_dir()) == sorted(
        f"step{s}" for s in steps
    )
    for entry in manifest["revisions"]:
        assert entry["revision"] == f"step{entry['step']}"
        assert entry["tokens"] == entry["step"] * 4 * 32
        assert isinstance(entry["val_loss"], float)
    assert manifest["revisions"][-1]["val_loss"] < manifest["revisions"][0]["val_loss"]


def test_strata_json_and_hashes(trained):
    rev = trained.run_dir / "checkpoints" / "step12"
    meta = json.loads((rev / "strata.json").read_text())
    for key in ("step", "tokens", "last_batch_loss", "val_loss", "git_commit", "sha256", "data"):
        assert key in meta
    assert meta["step"] == 12 and meta["data"]["batches_seen"] == 12
    assert meta["data"]["windows_consumed"] == 12 * 4
    assert meta["parent"] == "step8"
    assert json.loads((rev.parent / "step0" / "strata.json").read_text())["parent"] is None
    index = Path(trained.cfg.data.dataset) / "index.json"
    assert meta["data"]["dataset_fingerprint"] == hashlib.sha256(index.read_bytes()).hexdigest()
    assert set(meta["sha256"]) >= {"model.safetensors", "config.json", "tokenizer.json"}
    verify_revision(rev)
    weights = rev / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="model.safetensors: sha256 differs"):
        verify_revision(rev)
    data[-1] ^= 1
    weights.write_bytes(bytes(data))


def test_load_returns_the_trained_weights(trained):
    model = load(trained.run_dir / "checkpoints" / "step12")
    for name, tensor in trained.model.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor.cpu()), name


def test_revision_loads_in_transformers_with_same_logits(trained):
    transformers = pytest.importorskip("transformers")
    rev = trained.run_dir / "checkpoints" / "step8"
    hf = transformers.AutoModelForCausalLM.from_pretrained(rev).eval()
    assert type(hf).__name__ == "LlamaForCausalLM"
    ours = load(rev)
    idx = torch.randint(
        0, ours.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        expected = ours(idx)
        got = hf(idx).logits[..., : ours.config.vocab_size]
    assert torch.allclose(got, expected, atol=1e-4), (got - expected).abs().max()
    tok = transformers.AutoTokenizer.from_pretrained(rev)
    assert tok.decode(tok.encode("def f(x):\n    return 1")) == "def f(x):\n    return 1"
