"""docs/CONFIG.md documents every config key and preset (so the docs stay true)."""

from pathlib import Path

from strata.model import ModelConfig
from strata.run.config import Config

DOC = (Path(__file__).resolve().parents[2] / "docs" / "CONFIG.md").read_text()


def test_every_key_is_documented():
    for section, values in Config().to_dict().items():
        part = DOC.split(f"## [{section}]")[1].split("\n## ")[0]
        for key in values:
            assert f"| `{key}` |" in part, f"{section}.{key} missing from docs/CONFIG.md"


def test_every_preset_is_documented():
    for name in ModelConfig.presets():
        assert f"`{name}`" in DOC, name
