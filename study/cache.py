"""Per-revision cache: `study/cache/<revision>.json`, valid while its key matches.

Design choices:
- One small JSON file per revision holds everything evaluated for it (metric columns,
  per-source numbers, per-sequence memorisation results) plus `key`, the sha256 of
  the study settings, the dataset, the revision's weights and the previous revision's
  weights (its `dnorm` columns depend on them). A rerun reuses a file whose key
  matches and evaluates everything else; `force` ignores the cache (and rewrites it).
- Files are written atomically, so an interrupted study (killed, or out of disk
  space: `write_failed`) leaves valid entries behind and the next run resumes from them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from strata.checkpoints.files import write_json_atomic
from strata.run.jsonfile import read_object


class Cache:
    def __init__(self, folder: Path, force: bool = False) -> None:
        self.folder, self.force = Path(folder), force

    def _path(self, revision: str) -> Path:
        return self.folder / f"{revision}.json"

    def get(self, revision: str, key: str) -> dict[str, Any] | None:
        """The cached record for `revision` when its key matches, else None."""
        path = self._path(revision)
        if self.force or not path.is_file():
            return None
        try:
            record = read_object(path)
        except ValueError:
            return None  # a damaged entry is just evaluated again
        return record if record.get("key") == key else None

    def put(self, revision: str, key: str, record: dict[str, Any]) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self._path(revision), {"key": key, **record})
        except OSError as err:  # disk full, say
            raise write_failed(err, self.folder.parent, f"the results of {revision}") from err


def write_failed(err: OSError, out: Path, what: str) -> OSError:
    """The one-line error of a study write that failed (disk full): what was kept."""
    where = f" ({err.filename})" if err.filename else ""
    kept = (
        f"every revision cached before is kept in {out / 'cache'} (a rerun continues from "
        "them) and the earlier report and tables are as they were"
    )
    return OSError(
        err.errno, f"{err.strerror or err}{where} while writing {what}; {kept}", str(out)
    )
