"""The one atomic file writer: prompt files, pool files, reports and baselines all go through it.

The bytes go to a temporary file beside the target, are flushed to disk, get the target's
mode, owner, group and extended attributes (or, for a new file, those of `like`, else the
umask's mode), and replace the target in one `os.replace`. An interrupt anywhere leaves the
old file and no temporary file; temporary files of an earlier write that was killed (SIGKILL,
power loss) are removed first.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes, *, like: Path | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path)
    model = path if path.exists() else like
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if model is not None and model.exists():
            _copy_ownership(model, tmp)
        else:
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def write_text_atomic(path: Path, text: str) -> None:
    """A text file (baseline, HTML report) as UTF-8 with "\n" newlines, never half-written."""
    write_atomic(path, text.encode("utf-8"))


def remove_leftovers(path: Path) -> None:
    """Temporary files of an earlier write of `path` that was killed mid-way."""
    for leftover in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
        with contextlib.suppress(OSError):
            leftover.unlink()


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _copy_ownership(model: Path, tmp: str) -> None:
    """The new file gets the model's mode, and its owner, group and extended attributes where
    this process may set them (root may; others keep their own)."""
    before = os.stat(model)
    os.chmod(tmp, before.st_mode & 0o7777)
    with contextlib.suppress(OSError):
        os.chown(tmp, before.st_uid, before.st_gid)
    with contextlib.suppress(OSError):
        os.chmod(tmp, before.st_mode & 0o7777)  # chown clears setuid/setgid bits: set them again
    for name in _xattrs(model):
        with contextlib.suppress(OSError):
            os.setxattr(tmp, name, os.getxattr(model, name))


def _xattrs(path: Path) -> list[str]:
    try:
        return os.listxattr(path) if hasattr(os, "listxattr") else []
    except OSError:
        return []


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
