"""`strata export` / `strata import`: revisions, resume checkpoints and HF folders."""

import json

import pytest
import torch
from strata.checkpoints import load
from strata.checkpoints.export import export_hf, import_hf
from strata.run.config import load_config
from strata.train.trainer import Trainer

from tests.conftest import tiny_overrides


@pytest.fixture(scope="module")
def run(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    overrides = tiny_overrides(tiny_dataset, out, **{"run.name": "exp", "train.max_steps": 8})
    trainer = Trainer(load_config("configs/debug.toml", overrides))
    trainer.fit()
    return trainer.run_dir


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_export_from_resume_equals_published_revision(run, tmp_path):
    out = export_hf(run / "resume" / "step-00000008", tmp_path / "from_resume")
    assert same_weights(load(out), load(run / "checkpoints" / "step8"))
    meta = json.loads((out / "strata.json").read_text())
    assert meta["step"] == 8 and (out / "tokenizer.json").is_file()
    # A run folder means its latest resume checkpoint.
    assert same_weights(load(export_hf(run, tmp_path / "from_run")), load(out))


def test_export_revision_loads_in_transformers(run, tmp_path):
    transformers = pytest.importorskip("transformers")
    out = export_hf(run / "checkpoints" / "step4", tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    ours = load(run / "checkpoints" / "step4")
    idx = torch.randint(
        0, ours.config.vocab_size, (1, 16), generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        diff = (hf(idx).logits[..., : ours.config.vocab_size] - ours(idx)).abs().max()
    assert diff < 1e-4


def test_export_refuses_existing_output_and_bad_input(run, tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError, match="taken: already exists"):
        export_hf(run / "checkpoints" / "step4", tmp_path / "taken")
    with pytest.raises(FileNotFoundError, match="not a published revision"):
        export_hf(tmp_path / "taken", tmp_path / "x")


@pytest.mark.parametrize("family", ["llama", "neox", "olmo2"])
def test_import_saved_hf_folder(family, tmp_path):
    from tests.checkpoints.test_hf_families import HF, perturb

    transformers = pytest.importorskip("transformers")
    config_cls, model_cls, extra = HF[family]
    cfg = getattr(transformers, config_cls)(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=64, **extra,
    )  # fmt: skip
    torch.manual_seed(0)
    hf = perturb(getattr(transformers, model_cls)(cfg))
    hf.save_pretrained(tmp_path / "step123")
    out = import_hf(tmp_path / "step123", tmp_path / "imported")
    assert json.loads((out / "strata.json").read_text())["step"] == 123
    ours = load(out, verify=True)
    assert ours.config.family == family
    idx = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert (hf(idx).logits - ours(idx)).abs().max() < 1e-4
    # And the imported checkpoint exports back to a folder transformers reads.
    again = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        assert (again(idx).logits - hf(idx).logits).abs().max() < 1e-4


def test_import_refuses_pickles(tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (folder / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ValueError, match="reads safetensors only"):
        import_hf(folder, tmp_path / "out")


def test_cli_export_and_errors(run, tmp_path):
    from tests.train.test_cli import strata

    ok = strata(
        "export", str(run / "checkpoints" / "step2"), "--to", "hf", "--out", str(tmp_path / "e")
    )
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "e" / "config.json").is_file()
    again = strata("export", str(run / "checkpoints" / "step2"), "--out", str(tmp_path / "e"))
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [
        f"strata: error: {tmp_path / 'e'}: already exists; choose another --out"
    ]


def test_cli_generate_greedy_matches_library(run):
    from strata.model.generate import generate
    from strata.tokenizer import Tokenizer

    from tests.train.test_cli import strata

    prompt = "def function_1(x):\n    value_0"
    tok = Tokenizer.load(run / "checkpoints" / "step8")
    ids = tok.encode(prompt)
    model = load(run / "checkpoints" / "step8")
    expected = generate(model, torch.tensor([ids]), 12, 0.0, eos_id=tok.eos_id)
    new = [t for t in expected[0, len(ids) :].tolist() if t != tok.eos_id]
    for source in (run / "checkpoints" / "step8", run):  # a revision, or the run's resume/latest
        result = strata(
            "generate",
            str(source),
            "--prompt",
            prompt,
            "--max-new-tokens",
            "12",
            "--temperature",
            "0",
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == prompt + tok.decode(new) + "\n"
