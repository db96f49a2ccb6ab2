"""`strata study`'s options come from StudySettings: one option per field, defaults once."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from strata.study.settings import StudySettings

from strata.cli import main

DOC = (Path(__file__).resolve().parents[2] / "docs" / "study.md").read_text()


def test_help_lists_every_setting_with_its_default(capsys):
    with pytest.raises(SystemExit):
        main(["study", "--help"])
    text = " ".join(capsys.readouterr().out.split("options:", 1)[1].split())
    for f in dataclasses.fields(StudySettings):
        option = StudySettings.spell(f.name)
        assert option in text, option
        after = text.split(f"{option} ", 1)[1].split(" --", 1)[0]
        assert f"(default: {f.default})" in after, (option, after)


def test_every_setting_is_documented_with_its_default():
    for f in dataclasses.fields(StudySettings):
        row = next(
            (r for r in DOC.splitlines() if r.startswith(f"| `{StudySettings.spell(f.name)}")), None
        )
        assert row is not None, f"{f.name} missing from docs/study.md"
        if f.default is not None:
            assert f"| {f.default} |" in row, row


def test_bad_option_values_are_one_line_errors(tmp_path, capsys):
    assert main(["study", str(tmp_path), "--eval-windows", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "strata: error: --eval-windows = 0: expected a positive integer"
