"""The typed-config base (model/typed.py): types, bounds, choices, errors, field docs."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

import pytest
from strata.model import ModelConfig
from strata.model.config import MoEConfig
from strata.model.typed import ConfigError, Typed, closest, field_docs, setting
from strata.run import sections
from strata.study.settings import StudySettings


@dataclass
class Inner(Typed):
    PREFIX: ClassVar[str] = "outer.inner."

    k: int = setting(1, ge=1)
    """Inner knob."""


@dataclass
class Outer(Typed):
    PREFIX: ClassVar[str] = "outer."
    ALIASES: ClassVar[dict[str, str]] = {"async": "async_on"}

    n: int = setting(gt=0)
    """A required positive integer."""
    rate: float = setting(0.5, gt=0, le=1)
    """A fraction in (0, 1]."""
    mode: str = setting("a", choices=("a", "b"))
    """One of two modes."""
    flag: bool = False
    """A switch."""
    limit: float | None = setting(None, ge=0)
    """None or a non-negative number."""
    steps: list[int] = setting(default_factory=list, ge=0)
    """Non-negative steps."""
    inner: Inner | None = None
    """A nested section."""
    async_on: bool = False
    """Spelled `async` in files."""

    def check(self) -> None:
        if self.limit is not None and self.limit > self.n:
            self.fail("limit", f"at most n ({self.n})")


def error(**kwargs) -> str:
    with pytest.raises(ConfigError) as err:
        Outer(**kwargs)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_types_are_checked_and_ints_become_floats():
    o = Outer(n=3, rate=1, limit=2)
    assert isinstance(o.rate, float) and isinstance(o.limit, float)
    assert error(n="3") == "outer.n = '3': expected a value of type int"
    assert error(n=3.0) == "outer.n = 3.0: expected a value of type int"
    assert error(n=True) == "outer.n = True: expected a value of type int"  # bool is no int
    assert error(n=3, flag=1) == "outer.flag = 1: expected a value of type bool"
    assert error(n=3, mode=2) == "outer.mode = 2: expected a value of type str"
    assert (
        error(n=3, steps=[1, "2"]) == "outer.steps = [1, '2']: expected a value of type list[int]"
    )
    assert error(n=3, limit="1") == "outer.limit = '1': expected a value of type float | None"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_refused(bad):
    assert error(n=3, rate=bad) == f"outer.rate = {bad!r}: expected a finite number"
    assert error(n=3, limit=bad).endswith("expected a finite number")


def test_bounds_and_choices():
    assert error(n=0) == "outer.n = 0: expected a positive integer"
    assert error(n=3, rate=0.0) == "outer.rate = 0.0: expected in (0, 1]"
    assert error(n=3, rate=1.5) == "outer.rate = 1.5: expected in (0, 1]"
    assert Outer(n=3, rate=1.0).rate == 1.0
    assert error(n=3, mode="c") == "outer.mode = 'c': expected one of ('a', 'b')"
    assert error(n=3, limit=-1) == "outer.limit = -1.0: expected a value >= 0"
    assert error(n=3, steps=[2, -1]) == "outer.steps = [2, -1]: expected integers >= 0"
    assert error(n=3, limit=4) == "outer.limit = 4.0: expected at most n (3)"  # check()


def test_from_dict_unknown_missing_alias_and_nested():
    o = Outer.from_dict({"n": 2, "async": True, "inner": {"k": 5}})
    assert o.async_on and o.inner == Inner(k=5)
    assert Outer.from_dict(o.to_dict()) == o
    with pytest.raises(
        ConfigError, match=r"^unknown key 'outer.nn'; did you mean 'n'\? valid: n, "
    ):
        Outer.from_dict({"nn": 2})
    with pytest.raises(ConfigError, match=r"^outer: missing required field\(s\) \['n'\]$"):
        Outer.from_dict({})
    with pytest.raises(ConfigError, match=r"^outer.inner.k = 0: expected an integer >= 1$"):
        Outer.from_dict({"n": 2, "inner": {"k": 0}})
    with pytest.raises(ConfigError, match=r"^unknown key 'outer.inner.j'; valid: k$"):
        Outer.from_dict({"n": 2, "inner": {"j": 0}})
    assert closest("zzz", ["a", "b"]) == "valid: a, b"


def test_frozen_dataclasses_are_converted_too():
    s = StudySettings(seq_len=8, device="cuda:1")
    assert s.seq_len == 8
    with pytest.raises(ConfigError, match=r"^--mem-samples = -1: expected an integer >= 0$"):
        StudySettings(mem_samples=-1)
    with pytest.raises(ConfigError, match=r"^--device = 'tpu': expected auto, cpu, cuda or cuda:N"):
        StudySettings(device="tpu")


CLASSES = [
    ModelConfig, MoEConfig, StudySettings, sections.RunConfig, sections.DataConfig,
    sections.TrainConfig, sections.OptimConfig, sections.CheckpointConfig,
    sections.PublishConfig, sections.LogConfig,
]  # fmt: skip


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_field_is_typed_and_documented(cls):
    assert issubclass(cls, Typed)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        assert docs.get(f.name, "").strip(), f"{cls.__name__}.{f.name} has no docstring"


def test_field_docs_reads_the_literal_after_each_field():
    assert field_docs(Outer)["rate"] == "A fraction in (0, 1]."
    assert field_docs(Outer)["async_on"] == "Spelled `async` in files."
    assert field_docs(Inner) == {"k": "Inner knob."}
