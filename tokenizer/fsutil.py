"""File helpers shared by tokenizer training, `prepare`, shards and checkpoints:
atomic folder replacement, finding what a killed replacement left, file hashing, and
the rule for reading a file someone else made (`own_file`, `read_own`).

A file named by a dataset, a run or a checkpoint is read only when it is a regular file
of its folder: a symbolic link could point anywhere, a FIFO blocks a reader forever and
`/dev/zero` never ends. `read_own` opens without following a link and without blocking
(`O_NOFOLLOW | O_NONBLOCK`), checks the open file is regular and at most `limit` bytes,
then reads it; every JSON metadata reader goes through it.

A replacement of `final` writes `<final>.tmp-<pid>` and moves an older `final` to
`<final>.old-<pid>` for a moment; a process killed with `kill -9` leaves those behind.
`leftover_dirs` names them by that exact pattern, only when they are real folders (not
links) and the process `<pid>` is gone, so a later run can remove them.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import stat
from pathlib import Path


def temp_sibling(final: Path) -> Path:
    """An empty `<final>.tmp-<pid>` folder next to `final` (same filesystem: rename is atomic)."""
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def replace_dir(tmp: Path, final: Path) -> None:
    """Move the finished folder `tmp` to `final`, replacing an older `final` if any."""
    if final.exists():
        trash = final.with_name(f"{final.name}.old-{os.getpid()}")
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)


def _process_gone(pid: int) -> bool:
    if pid == os.getpid():
        return True  # not in progress: this process makes one at a time (temp_sibling)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):
        return False  # someone else's running process, or cannot tell: keep it
    return False


def leftover_dirs(final: Path, complete: bool) -> list[Path]:
    """`<final>.tmp-<pid>` folders (and, when `final` is `complete`, `<final>.old-<pid>`)
    of processes that are gone. While `final` is incomplete an `.old-` folder may be the
    only copy of the replaced data, so it is kept."""
    kinds = "tmp|old" if complete else "tmp"
    pattern = re.compile(rf"{re.escape(final.name)}\.(?:{kinds})-([0-9]+)")
    if not final.parent.is_dir():
        return []
    found = []
    for path in sorted(final.parent.iterdir()):
        match = pattern.fullmatch(path.name)
        if match and path.is_dir() and not path.is_symlink() and _process_gone(int(match[1])):
            found.append(path)
    return found


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO})
"""errno values of a write the disk refused (full, over quota, read-only, failing)."""

METADATA_LIMIT = 64 << 20
"""The most bytes a JSON metadata file (strata.json, manifest.json, trainer.json,
config.json, a weights index) may have; a larger one is refused, not read."""


def own_file(path: str | Path, what: str = "checkpoint") -> Path:
    """The file to open for `path`: `path` itself when it is a regular file (or missing);
    ValueError for a symbolic link (it could point anywhere: a `what` reads only what is
    inside its folder) or anything that is not a regular file (a FIFO, a device).

    One kind of link is followed: a file of a Hugging Face hub cache snapshot
    (`REPO/snapshots/REV/NAME` -> `REPO/blobs/HASH`, how `huggingface_hub` stores every
    download); its target, a regular file in that repository's own `blobs/`, is returned."""
    path = Path(path)
    if path.is_symlink():
        blob = _hub_blob(path)
        if blob is not None:
            return blob
        raise ValueError(
            f"{path}: a symbolic link (to {os.readlink(path)}); a {what}'s files must be "
            "regular files inside its folder"
        )
    if path.exists() and not path.is_file():
        raise ValueError(f"{path}: not a regular file (a {_kind(path)})")
    return path


def _hub_blob(link: Path) -> Path | None:
    """The blob a hub-cache snapshot link names, when it is one; else None."""
    snapshots = link.parent.parent
    blobs = snapshots.parent / "blobs"
    if snapshots.name != "snapshots" or blobs.is_symlink() or not blobs.is_dir():
        return None
    target = link.resolve()
    if target.parent != blobs.resolve() or target.is_symlink() or not target.is_file():
        return None
    return target


def _kind(path: Path) -> str:
    mode = path.stat().st_mode
    kinds = {stat.S_ISDIR: "folder", stat.S_ISFIFO: "FIFO", stat.S_ISSOCK: "socket"}
    kinds |= {stat.S_ISCHR: "device", stat.S_ISBLK: "device"}
    return next((name for test, name in kinds.items() if test(mode)), "special file")


def read_own(path: str | Path, limit: int | None = METADATA_LIMIT, what: str = "run") -> bytes:
    """The bytes of `path`, a regular file of at most `limit` bytes (None: any size), opened
    without following a link or blocking; FileNotFoundError when missing, ValueError
    naming the file otherwise."""
    path = Path(path)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(own_file(path, what), flags)  # a link (but a hub blob's) is refused
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):  # replaced since own_file looked
            raise ValueError(f"{path}: not a regular file")
        if limit is not None and info.st_size > limit:
            raise ValueError(
                f"{path}: {info.st_size:,} bytes, more than the {limit:,} a {what}'s "
                "metadata file may have; not read"
            )
        data = f.read(limit + 1 if limit is not None else -1)
    if limit is not None and len(data) > limit:  # grew while being read
        raise ValueError(f"{path}: more than {limit:,} bytes; not read")
    return data
