"""Typed fields of JSON metadata: read a value, check its type, name the key on error.

The metadata files of a run are data someone else may have written. Each typed reader
(`RevisionMeta`, `DataCursor`, `ManifestEntry`) takes its fields through `take`, which
accepts the declared type (ints for floats, never bools for ints; `None` where the field
is optional) and otherwise raises one ValueError naming the file, the key and what was
expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_NAMES = {int: "an integer", float: "a number", str: "a string", dict: "an object",
          list: "a list", bool: "true or false"}  # fmt: skip


def _fits(value: Any, kind: type) -> bool:
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind)


def take(
    raw: dict[str, Any], key: str, kind: type, where: Path | str, optional: bool = True
) -> Any:
    """`raw[key]` checked against `kind` (None allowed when `optional` and absent/null)."""
    value = raw.get(key)
    if value is None:
        if optional:
            return None
        raise ValueError(f"{where}: '{key}' is missing; expected {_NAMES[kind]}")
    if not _fits(value, kind):
        raise ValueError(f"{where}: '{key}' = {value!r:.80}: expected {_NAMES[kind]}")
    return float(value) if kind is float else value


def take_str_map(raw: dict[str, Any], key: str, where: Path | str) -> dict[str, str]:
    """`raw[key]` as a {str: str} map (an empty map when absent)."""
    value = take(raw, key, dict, where) or {}
    bad = [k for k, v in value.items() if not isinstance(v, str)]
    if bad:
        raise ValueError(f"{where}: '{key}.{bad[0]}' = {value[bad[0]]!r:.80}: expected a string")
    return value
