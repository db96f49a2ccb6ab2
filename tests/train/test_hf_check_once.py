"""The Hugging Face compatibility check is decided once per run, not once per revision.

Before, every published revision ran `check_hf_compatible` four times (the trainer's own
note made five): `write_revision` / `write_revision_files` asked `hf_incompatibility`,
`weights_plan` asked it again, `hf_plan` (through `_names`) and `hf_config` each checked
once more. Now the publisher decides `weights_format` on its first revision and passes
the decision down; the trainer reads the same decision for its note.
"""

import json

import pytest
from strata.checkpoints import hf, hf_weights, publish
from strata.run import Manifest
from strata.train.trainer import Trainer


def count_checks(monkeypatch) -> list:
    """Every call of `check_hf_compatible`, wherever it is looked up."""
    calls, original = [], hf.check_hf_compatible

    def counting(config):
        calls.append(config)
        return original(config)

    for module in (hf, hf_weights, publish):
        monkeypatch.setattr(module, "check_hf_compatible", counting)
    return calls


@pytest.mark.parametrize("background", ["true", "false"])
@pytest.mark.parametrize("native", [False, True], ids=["hf", "native"])
def test_one_check_per_run_whatever_the_revisions(tiny_config, monkeypatch, background, native):
    values = {"run.name": f"hf-{background}-{native}", "publish.async": background}
    if native:  # no Hugging Face class has a Llama layout with a parallel residual
        values["model.parallel_residual"] = "true"
    calls = count_checks(monkeypatch)
    trainer = Trainer(tiny_config(**values))
    trainer.fit()
    revisions = Manifest.read(trainer.run_dir / "checkpoints").revisions
    assert [r.step for r in revisions] == [0, 1, 2, 4, 8, 12]
    assert len(calls) == 1  # the trainer's note and six revisions: one decision
    for r in revisions:  # and the decision reached every revision
        folder = trainer.run_dir / "checkpoints" / r.revision
        meta = json.loads((folder / "strata.json").read_text())
        assert (folder / "config.json").exists() is not native
        assert (meta.get("weights_format") == "strata") is native
        assert ("parallel_residual" in meta.get("hf_incompatible", "")) is native


def test_a_publisher_decides_again_for_another_config(tmp_path, monkeypatch):
    import torch
    from strata.model import GPT, ModelConfig

    calls = count_checks(monkeypatch)
    publisher = publish.Publisher(tmp_path)
    llama = GPT(ModelConfig.from_preset("debug", vocab_size=64))
    parallel = GPT(ModelConfig.from_preset("debug", vocab_size=64, parallel_residual=True))
    with torch.no_grad():
        publisher.publish(0, llama, llama.config, None, {})
        publisher.publish(1, llama, llama.config, None, {})
        publisher.publish(2, parallel, parallel.config, None, {})  # a new config: a new decision
    assert len(calls) == 2
    assert (tmp_path / "step1" / "config.json").exists()
    assert not (tmp_path / "step2" / "config.json").exists()
