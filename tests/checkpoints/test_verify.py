"""`strata verify`: a clean run passes; each planted fault is reported with its kind."""

import json
import shutil
from pathlib import Path

import pytest
from strata.checkpoints.verify import check, verify

from tests.checkpoints.test_provenance import strata
from tests.conftest import tiny_overrides

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def clean_run(tiny_dataset, tmp_path_factory):
    from strata.run.config import load_config
    from strata.train.trainer import Trainer

    out = tmp_path_factory.mktemp("verify")
    cfg = load_config(ROOT / "configs/debug.toml", tiny_overrides(tiny_dataset, out))
    Trainer(cfg).fit()
    return cfg.run_dir


@pytest.fixture
def run(clean_run, tmp_path):
    """A fresh copy of the clean run to damage."""
    copy = tmp_path / "run"
    shutil.copytree(clean_run, copy, ignore=shutil.ignore_patterns("resume"))
    return copy


def edit_json(path: Path, change) -> None:
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj))


def kinds(path) -> set[str]:
    return {p.kind for p in verify(path)}


def test_clean_run_passes(clean_run):
    assert verify(clean_run) == [] and verify(clean_run / "checkpoints") == []
    report = check(clean_run, progress=False)
    assert report.revisions == 6 and report.files >= 6 * 5 and not report.notes


def test_flipped_byte(run):
    weights = run / "checkpoints/step4/model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 1
    weights.write_bytes(bytes(data))
    (problem,) = verify(run)
    assert problem.kind == "hash-mismatch" and problem.path == str(weights)


def test_missing_extra_and_listed_files(run):
    (run / "checkpoints/step1/config.json").unlink()
    (run / "checkpoints/step2/notes.txt").write_text("hello")
    found = {(p.kind, Path(p.path).name) for p in verify(run)}
    assert found == {("missing-file", "config.json"), ("extra-file", "notes.txt")}


def test_deleted_revision_still_in_manifest(run):
    shutil.rmtree(run / "checkpoints/step2")
    assert kinds(run) == {"missing-revision"}


def test_unlisted_revision_folder(run):
    edit_json(run / "checkpoints/manifest.json",
              lambda m: m.update(revisions=m["revisions"][:-1]))  # fmt: skip
    (problem,) = verify(run)
    assert problem.kind == "unlisted-revision" and problem.path.endswith("step12")


def test_identical_weights(run):
    ckpt = run / "checkpoints"
    shutil.copy(ckpt / "step4/model.safetensors", ckpt / "step8/model.safetensors")
    digest = json.loads((ckpt / "step4/strata.json").read_text())["sha256"]["model.safetensors"]
    edit_json(
        ckpt / "step8/strata.json", lambda m: m["sha256"].update({"model.safetensors": digest})
    )
    (problem,) = verify(run)
    assert problem.kind == "identical-weights" and "step4" in problem.detail


@pytest.mark.parametrize("name", ["../evil", "/etc", ".step4.tmp", ""])
def test_manifest_name_escaping_the_folder(run, name):
    edit_json(run / "checkpoints/manifest.json",
              lambda m: m["revisions"].append({"revision": name, "step": 99}))  # fmt: skip
    assert kinds(run) == {"unsafe-revision-name"}


def test_step_mismatch(run):
    edit_json(run / "checkpoints/step8/strata.json", lambda m: m.update(step=9))
    assert kinds(run) == {"step-mismatch"}


def test_missing_scheduled_revision_breaks_the_chain(run):
    shutil.rmtree(run / "checkpoints/step4")
    keep = lambda m: m.update(revisions=[r for r in m["revisions"] if r["step"] != 4])  # noqa: E731
    edit_json(run / "checkpoints/manifest.json", keep)
    found = {(p.kind, Path(p.path).parts[-2:]) for p in verify(run)}
    assert found == {
        ("missing-scheduled", ("checkpoints", "step4")),
        ("chain-parent", ("step8", "strata.json")),
    }
    (run / "config.toml").unlink()  # no config: the schedule recorded in strata.json
    assert kinds(run / "checkpoints") == {"missing-scheduled", "chain-parent"}
    for folder in (run / "checkpoints").glob("step*"):  # and without that: nothing to check
        edit_json(folder / "strata.json", lambda m: m.pop("run"))
    assert "missing-scheduled" not in kinds(run / "checkpoints")


def test_ledger_data_fields(run):
    ckpt = run / "checkpoints"
    edit_json(ckpt / "step2/strata.json", lambda m: m["data"].update(batches_seen=3))
    edit_json(ckpt / "step4/strata.json", lambda m: m["data"].update(windows_consumed=15))
    edit_json(ckpt / "step8/strata.json", lambda m: m["data"].update(tokenizer_sha256="0" * 64))
    edit_json(ckpt / "step12/strata.json", lambda m: m["data"].update(dataset_fingerprint="x"))
    found = {(p.kind, Path(p.path).parent.name) for p in verify(run)}
    assert found == {
        ("chain-batches", "step2"),
        ("chain-batches", "step4"),
        ("tokenizer-mismatch", "step8"),
        ("data-mismatch", "step12"),
    }


NESTED = '{"x": ' + "[" * 100_000 + "]" * 100_000 + "}"


@pytest.mark.parametrize(
    "file, change, kind",
    [
        ("step4/strata.json", lambda m: m["data"].update(global_batch_size=None), "bad-metadata"),
        ("step4/strata.json", lambda m: m["data"].update(global_batch_size={}), "bad-metadata"),
        ("step4/strata.json", lambda m: m.update(data=[1]), "bad-metadata"),
        ("step4/strata.json", lambda m: m.update(step="4"), "bad-metadata"),
        ("step4/strata.json", NESTED, "bad-metadata"),
        ("manifest.json", NESTED, "bad-manifest"),
        ("manifest.json", lambda m: m.update(revisions=[[1]]), "bad-manifest"),
    ],
    ids=["gbs-null", "gbs-object", "data-list", "step-string", "nested-meta",
         "nested-manifest", "manifest-entry-list"],
)  # fmt: skip
def test_malformed_metadata_is_a_problem_never_a_pass_or_a_crash(run, file, change, kind):
    path = run / "checkpoints" / file
    if isinstance(change, str):
        path.write_text(change)
    else:
        edit_json(path, change)
    problems = verify(run)
    assert kind in {p.kind for p in problems}, problems
    assert all(p.path.startswith(str(run)) and "\n" not in p.detail for p in problems)


@pytest.mark.parametrize("text", ["max_steps = 3.5", "max_steps = 'x'", "max_steps = -1"])
def test_a_malformed_config_toml_is_a_problem(run, text):
    import re

    config = run / "config.toml"
    config.write_text(re.sub(r"max_steps = \d+", text, config.read_text()))
    result = strata("verify", str(run))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"PROBLEM bad-config {config}: train.max_steps" in result.stdout


def test_temp_folder_is_a_note(run):
    (run / "checkpoints/.step16.tmp").mkdir()
    report = check(run, progress=False)
    assert report.problems == [] and any(".step16.tmp" in n for n in report.notes)


def test_not_a_run_is_a_usage_error(tmp_path):
    with pytest.raises(ValueError, match="not a run folder"):
        verify(tmp_path)


def test_cli_exit_status(run):
    ok = strata("verify", str(run))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip().splitlines()[-1].startswith("ok: 6 revision(s)")
    (run / "checkpoints/step0/model.safetensors").write_bytes(b"junk")
    bad = strata("verify", str(run / "checkpoints"))
    assert bad.returncode == 1
    assert bad.stdout.startswith(
        f"PROBLEM hash-mismatch {run}/checkpoints/step0/model.safetensors:"
    )
    assert "1 problem(s)" in bad.stdout


def test_every_problem_kind_is_documented():
    import re

    source = (ROOT / "checkpoints/verify.py").read_text()
    doc = (ROOT / "docs/provenance.md").read_text()
    found = set(re.findall(r'(?:add\(|kind = )"([a-z-]+)"', source))
    found |= set(re.findall(r'"([a-z]+-mismatch)"', source))
    assert len(found) >= 15
    assert not [k for k in found if f"| `{k}` |" not in doc]


def test_symlinked_revision_is_flagged_not_followed(run, tmp_path):
    from strata.study import study

    outside = tmp_path / "elsewhere"
    shutil.copytree(run / "checkpoints" / "step4", outside)
    (run / "checkpoints" / "step99").symlink_to(outside)
    assert "symlink" in kinds(run)
    with pytest.raises(ValueError, match="step99: a symbolic link"):
        study(run, quiet=True)
