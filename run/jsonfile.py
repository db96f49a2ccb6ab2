"""JSON files of a run: read one object with a one-line error, write atomically.

Every metadata file of the run contract (strata.json, manifest.json, trainer.json) is
read by `read_object` and written by `write_atomic`: a temporary file in the same
folder, fsync, then a rename over the target, so a reader sees the old file or the new
one, never half of one; a failed write removes its temporary file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from strata.tokenizer.fsutil import METADATA_LIMIT, read_own


def read_object(path: Path, limit: int | None = METADATA_LIMIT) -> dict[str, Any]:
    """The JSON object in `path` (a regular file of at most `limit` bytes: `read_own`);
    ValueError naming the file when it is not one."""
    data = read_own(path, limit)
    try:
        obj = json.loads(data.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise ValueError(f"{path}: not valid JSON ({type(err).__name__}: {err})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def write_atomic(path: str | Path, obj: Any) -> None:
    """Write JSON to a temporary file in the same folder, fsync, then rename over `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # disk full, say: leave no half-written temporary file
        tmp.unlink(missing_ok=True)
        raise
