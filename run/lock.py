"""One trainer per run folder: an exclusive lock on `RUN/.lock`, held for the run's life.

Design choices:
- `fcntl.flock` on an open file: the kernel releases it when the process dies, even by
  kill -9, so a crashed run never leaves a stale lock to clean by hand. The file holds
  the holder's `pid@host` so the refusal can name it; the file itself stays (its
  content is only a hint, the lock is the flock).
- `strata train` takes it around the whole run (building the trainer included), so a
  second job on the folder is refused before it writes anything. Under torchrun rank 0
  alone takes it (the other processes of the same job share the run by design).
- On a platform without `fcntl` (Windows) the lock is a no-op.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK = ".lock"


class RunLocked(ValueError):
    """Another process holds the run folder."""


class RunLock:
    """`with RunLock(root):` or `acquire()` / `release()`; refuses with one line."""

    def __init__(self, root: str | Path, held: bool = True) -> None:
        """`held=False`: a no-op lock (the other processes of a torchrun job)."""
        self.path, self.held = Path(root) / LOCK, held
        self._file = None

    def acquire(self) -> RunLock:
        if fcntl is None or not self.held or self._file is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")  # noqa: SIM115 - held open for the run's life
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise RunLocked(
                f"{self.path.parent}: in use by {holder} (another `strata train` on this run "
                "folder); wait for it to end, or train under another run.name"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        self._file = f
        return self

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
