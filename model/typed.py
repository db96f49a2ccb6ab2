"""The typed-config base every config of Strata uses: model config, run sections, study.

    @dataclass
    class TrainConfig(Typed):
        PREFIX = "train."
        seq_len: int = setting(256, gt=0)
        \"\"\"Tokens per training sequence.\"\"\"

Design choices:
- A config is a plain `@dataclass` deriving from `Typed`. Each field's type is its
  annotation; its choices and bounds are declared on the field with `setting(...)`
  (kept in `dataclasses.field(metadata=...)`); its documentation is the string literal
  after it, read by `field_docs` (argparse help, docs checks).
- `Typed.__post_init__` checks every field against its annotation (int, float, bool,
  str, `X | None`, `list[X]`, a nested `Typed` or a dict of its keys), converts ints
  given for floats, refuses bools for ints and non-finite floats, checks the declared
  choices and bounds, then calls `check()`, the hook for rules between fields.
- One error: `ConfigError` (a ValueError), one line, `<key> = <value!r>: expected <what>`,
  where the key is spelled as the user wrote it: `PREFIX + name` (`train.seq_len`,
  `model.moe.top_k`), or whatever `spell` returns (`--eval-windows` for the study).
  Unknown keys name the closest valid one (difflib).
- This module imports nothing of ours, so model/, run/ and study/ can all build on it.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import inspect
import math
import operator
import types
import typing
from typing import Any, ClassVar, NoReturn, TypeVar

MISSING: Any = dataclasses.MISSING
T = TypeVar("T", bound="Typed")


class ConfigError(ValueError):
    """A configuration problem, reported as one line naming the offending key."""


def setting(
    default: Any = MISSING,
    *,
    choices: tuple | None = None,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    expected: str | None = None,
    default_factory: Any = MISSING,
) -> Any:
    """A dataclass field with its allowed values declared: `choices`, bounds (`gt`, `ge`,
    `lt`, `le`; applied to every item of a list), and `expected`, the words an error
    uses instead of the ones derived from the bounds."""
    rules = {"choices": choices, "gt": gt, "ge": ge, "lt": lt, "le": le, "expected": expected}
    metadata = {k: v for k, v in rules.items() if v is not None}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def device_name(value: str) -> bool:
    """Whether `value` names a device a config may ask for: auto, cpu, cuda or cuda:N."""
    return value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit())


def closest(name: str, valid: list[str]) -> str:
    """ "did you mean 'x'? valid: a, b, c" for a name that is not one of `valid`."""
    match = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    hint = f"did you mean '{match[0]}'? " if match else ""
    return f"{hint}valid: {', '.join(valid)}"


def unknown_key(shown: str, key: str, valid: list[str]) -> ConfigError:
    """The error for a key that is no field: "unknown key 'train.sq_len'; did you mean..."."""
    return ConfigError(f"unknown key '{shown}'; {closest(key, valid)}")


@functools.cache
def type_hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of a dataclass's fields."""
    return typing.get_type_hints(cls)


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """{field: docstring}: the string literal after each field in the class source (and
    in its bases'), as litgpt documents its config."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or not dataclasses.is_dataclass(klass):
            continue
        tree = ast.parse(inspect.getsource(klass).lstrip())
        body = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)).body
        for node, after in zip(body, body[1:], strict=False):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def optional_of(hint: Any) -> tuple[Any, bool]:
    """(the type inside `X | None`, whether None is allowed) for an annotation."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0], True
    return hint, False


def type_name(hint: Any) -> str:
    """An annotation as written: int, float | None, list[int], MoEConfig | None."""
    inner, optional = optional_of(hint)
    if typing.get_origin(inner) is list:
        name = f"list[{type_name(typing.get_args(inner)[0])}]"
    else:
        name = getattr(inner, "__name__", str(inner))
    return f"{name} | None" if optional else name


class _Mismatch(Exception):
    """A value that does not fit its annotation (turned into a ConfigError by the caller)."""


def coerce(value: Any, hint: Any) -> Any:
    """`value` checked against `hint` (ints become floats); raises _Mismatch otherwise."""
    hint, optional = optional_of(hint)
    if value is None and optional:
        return None
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and not math.isfinite(value):
            raise _Mismatch("a finite number")
        value = float(value) if ok else value
    elif hint is str:
        ok = isinstance(value, str)
    elif typing.get_origin(hint) is list:
        ok = isinstance(value, list)
        value = [coerce(v, typing.get_args(hint)[0]) for v in value] if ok else value
    elif isinstance(hint, type) and issubclass(hint, Typed):
        ok = isinstance(value, (hint, dict))
        value = hint.from_dict(value) if isinstance(value, dict) else value
    else:  # an annotation the base does not know: left to the class's check()
        ok = True
    if not ok:
        raise _Mismatch
    return value


def _describe(rules: dict[str, Any], hint: Any) -> str:
    """What the declared rules of a field allow, in words: "a positive integer", "in (0, 1]"."""
    if "expected" in rules:
        return rules["expected"]
    if "choices" in rules:
        return f"one of {tuple(rules['choices'])}"
    low = ("(", rules["gt"]) if "gt" in rules else ("[", rules["ge"]) if "ge" in rules else None
    high = (")", rules["lt"]) if "lt" in rules else ("]", rules["le"]) if "le" in rules else None
    if low and high:
        return f"in {low[0]}{low[1]}, {high[1]}{high[0]}"
    inner = optional_of(hint)[0]
    listed = typing.get_origin(inner) is list  # bounds apply to every item
    integer = (typing.get_args(inner)[0] if listed else inner) is int
    if low == ("(", 0) and integer:
        return "positive integers" if listed else "a positive integer"
    what = (
        ("integers" if integer else "values")
        if listed
        else ("an integer" if integer else "a value")
    )
    if low:
        return f"{what} {'>' if low[0] == '(' else '>='} {low[1]}"
    return f"{what} {'<' if high[0] == ')' else '<='} {high[1]}"


def _allowed(value: Any, rules: dict[str, Any]) -> bool:
    """Whether `value` (not None) meets the declared choices and bounds."""
    if "choices" in rules and value not in rules["choices"]:
        return False
    if isinstance(value, list):
        return all(_allowed(v, rules) for v in value)
    compare = {"gt": operator.gt, "ge": operator.ge, "lt": operator.lt, "le": operator.le}
    return all(op(value, rules[k]) for k, op in compare.items() if k in rules)


class Typed:
    """Base of a typed config dataclass: checks types, choices and bounds on creation."""

    PREFIX: ClassVar[str] = ""
    """How keys are named in errors: "train." gives "train.seq_len"."""
    ALIASES: ClassVar[dict[str, str]] = {}
    """Other spellings `from_dict` accepts for a key (TOML `async` for `async_save`)."""

    @classmethod
    def spell(cls, name: str) -> str:
        """A field's key as users write it (in errors and hints)."""
        return f"{cls.PREFIX}{name}"

    def __post_init__(self) -> None:
        hints = type_hints(type(self))
        for f in dataclasses.fields(self):
            value, hint = getattr(self, f.name), hints[f.name]
            try:
                checked = coerce(value, hint)
            except _Mismatch as err:
                what = err.args[0] if err.args else f"a value of type {type_name(hint)}"
                self.fail(f.name, what)
            if checked is not value:
                object.__setattr__(self, f.name, checked)  # frozen dataclasses too
            if checked is not None and f.metadata and not _allowed(checked, f.metadata):
                self.fail(f.name, _describe(dict(f.metadata), hint))
        self.check()

    def check(self) -> None:
        """Rules between fields (shapes, multiples); raise with `self.fail`. None by default."""

    def fail(self, name: str, expected: str) -> NoReturn:
        """Raise the one-line error for field `name`: "<key> = <value>: expected <what>"."""
        raise ConfigError(f"{self.spell(name)} = {getattr(self, name)!r}: expected {expected}")

    @classmethod
    def from_dict(cls: type[T], values: dict[str, Any]) -> T:
        """Build from a plain dict (TOML table, JSON); unknown or missing keys raise."""
        names = [f.name for f in dataclasses.fields(cls)]
        kwargs = {}
        for key, value in values.items():
            name = cls.ALIASES.get(key, key)
            if name not in names:
                raise unknown_key(cls.spell(key), key, names)
            kwargs[name] = value
        missing = [
            f.name
            for f in dataclasses.fields(cls)
            if f.default is MISSING and f.default_factory is MISSING and f.name not in kwargs
        ]
        if missing:
            where = cls.PREFIX.rstrip(".") or cls.__name__
            raise ConfigError(f"{where}: missing required field(s) {missing}")
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Every field as a plain value (nested configs as dicts): JSON and TOML ready."""
        return dataclasses.asdict(self)
