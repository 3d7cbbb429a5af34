"""The one atomic file writer: prompt files, pool files, reports and baselines all go through it.

The bytes go to a temporary file beside the target, are flushed to disk, get the target's
mode, owner, group and extended attributes (or, for a new file, those of `like`, else the
umask's mode), and replace the target in one `os.replace`. An interrupt anywhere leaves the
old file and no temporary file; temporary files of an earlier write that was killed (SIGKILL,
power loss) are removed first.

A symlink is followed: its target gets the bytes and the link stays a link. A regular file with
more than one hard link is rewritten in place instead, since a rename would give only this name
the new bytes and leave the other links on the old inode; its old bytes are first written (the
atomic way) and flushed to a backup `<name>.promptopt-backup` beside it, which is removed once
the new bytes are on disk, and put back if the in-place write fails.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import stat
import tempfile
from pathlib import Path

from .errors import WriteBackError

BACKUP_SUFFIX = ".promptopt-backup"


def write_atomic(path: Path, data: bytes, *, like: Path | None = None) -> None:
    # A symlink's target is written, not the link replaced by a regular file (a prompt or pool
    # file linked from a shared directory stays shared); a dangling link creates its target.
    path = Path(os.path.realpath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path)
    if _hard_linked(path):
        _write_in_place(path, data)
        return
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
    _fsync_directory(path.parent)


def _hard_linked(path: Path) -> bool:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_nlink > 1


def _write_in_place(path: Path, data: bytes) -> None:
    """Rewrite a hard-linked file in its own inode, so every link sees the new bytes; the mode,
    owner and extended attributes stay as they are. The backup holds the old bytes on disk
    until the new ones are there too: if this process dies mid-write, the backup remains."""
    backup = path.with_name(path.name + BACKUP_SUFFIX)
    if os.path.lexists(backup):
        raise WriteBackError(
            f"{backup}: a backup left by an interrupted in-place write of {path} (it has more than one "
            f"hard link), so {path} may be incomplete. Compare the two, restore the old bytes with "
            f"`cp {backup} {path}` if needed (cp keeps the hard links), delete the backup, and rerun."
        )
    old = path.read_bytes()
    write_atomic(backup, old, like=path)
    with open(path, "r+b") as handle:
        try:
            _overwrite(handle, data)
        except BaseException:
            _overwrite(handle, old)  # if this fails too, the backup stays for the user
            backup.unlink()
            raise
    backup.unlink()
    _fsync_directory(path.parent)


def _overwrite(handle: io.BufferedRandom, data: bytes) -> None:
    # write before truncating: a shorter file is never seen empty
    handle.seek(0)
    handle.write(data)
    handle.truncate()
    handle.flush()
    os.fsync(handle.fileno())


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY)
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
