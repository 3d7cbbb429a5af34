"""The diskcache store under the reply cache and the call log, guarded against a planted folder.

diskcache trusts its folder: it unpickles values, opens and removes whatever file a row's
`filename` column names (then `os.removedirs` on its folder), and takes its settings from the
database's Settings table (`sqlite_*` values formatted into PRAGMA statements, `disk_*` values
passed to the Disk, any other key set on the cache). A cache folder may be committed, shared or
planted, so here: values are data only, value files are diskcache's own files inside the folder
and regular files of bounded size, and the settings are ours.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sqlite3
import stat
from pathlib import Path
from typing import Any

import diskcache


class NotData(Exception):
    """A stored value that is not plain text or bytes (a pickle): never loaded."""


class ForeignFile(NotData):
    """A row whose value file is not one diskcache wrote in this store: never read or removed."""


MAX_VALUE_FILE_BYTES = 128 * 1024 * 1024  # a reply is capped at 16 MB; JSON escaping can grow it
# diskcache's own value files: "<2 hex>/<2 hex>/<28 hex>.val" under the store's folder.
_VALUE_FILE = re.compile(r"[0-9a-f]{2}{sep}[0-9a-f]{2}{sep}[0-9a-f]{28}\.val".replace("{sep}", re.escape(os.sep)))
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)


class DataOnlyDisk(diskcache.Disk):
    """diskcache's storage with unpickling taken out: values and keys are read back only if
    they were stored as text or bytes. A pickled entry (an older version's, or a planted one)
    raises NotData, which the cache treats as a miss.

    A row's `filename` column is used only when it has diskcache's own shape and its real path
    stays inside the store's folder, and then only a regular file of bounded size is read: a
    planted row naming any other file (absolute, `..`, a symlink out, a FIFO, /dev/zero) is a
    miss, and when diskcache culls or replaces it no file is removed."""

    def __init__(self, *args: Any, **settings: Any) -> None:
        # The Settings table's `disk_*` values are not trusted (see GuardedStore): they are
        # ignored (a `disk_directory` row among them), and the store's folder is fixed here.
        directory = str(args[0])
        super().__init__(directory, min_file_size=STORE_SETTINGS["disk_min_file_size"],
                         pickle_protocol=STORE_SETTINGS["disk_pickle_protocol"])
        self._root = os.path.realpath(directory)

    def own_file(self, filename: Any) -> str | None:
        """The path of a value file diskcache wrote in this store; None for any other name."""
        if not isinstance(filename, str) or not _VALUE_FILE.fullmatch(filename):
            return None
        path = os.path.join(self._root, filename)
        if os.path.commonpath([os.path.realpath(path), self._root]) != self._root:
            return None  # a folder of the store was replaced by a symlink out of it
        return path

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if mode == diskcache.core.MODE_PICKLE:
            raise NotData("a pickled cache value")
        if mode in (diskcache.core.MODE_BINARY, diskcache.core.MODE_TEXT):
            data = self._read_value_file(filename)
            if mode == diskcache.core.MODE_BINARY:
                return io.BytesIO(data) if read else data
            return io.StringIO(data.decode("utf-8"), newline=None).read()  # as open(..., "r") reads it
        if mode != diskcache.core.MODE_RAW:
            raise NotData(f"a cache row of unknown mode {mode!r}")
        return super().fetch(mode, filename, value, read)

    def _read_value_file(self, filename: Any) -> bytes:
        path = self.own_file(filename)
        if path is None:
            raise ForeignFile(f"a cache row naming {filename!r}, not a value file of the store")
        fd = os.open(path, _READ_FLAGS)  # non-blocking: opening a FIFO must not wait for a writer
        with os.fdopen(fd, "rb") as reader:
            info = os.fstat(reader.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ForeignFile(f"a cache row naming {filename!r}, which is not a regular file")
            data = reader.read(MAX_VALUE_FILE_BYTES + 1)
        if len(data) > MAX_VALUE_FILE_BYTES:
            raise NotData(f"a cache value file over {MAX_VALUE_FILE_BYTES:,} bytes")
        return data

    def remove(self, file_path: Any) -> None:
        """Remove a value file of the store and the two folders diskcache made for it, if empty;
        a row naming anything else goes without touching a file."""
        path = self.own_file(file_path)
        if path is None:
            return
        with contextlib.suppress(OSError):
            os.remove(path)
        for folder in (os.path.dirname(path), os.path.dirname(os.path.dirname(path))):
            with contextlib.suppress(OSError):
                os.rmdir(folder)  # fails, harmlessly, while the folder holds other files

    def get(self, key: Any, raw: bool) -> Any:
        if not raw:
            raise NotData("a pickled cache key")
        return super().get(key, raw)


# Every setting diskcache reads from a store's Settings table, fixed: a planted cache.db can hold
# any row there, and diskcache would run `sqlite_*` values as PRAGMA statements (formatted into
# the SQL), pass `disk_*` values to the Disk and set any other key as an attribute of the cache
# (`_directory` moves it to another folder). See GuardedStore.reset.
STORE_SETTINGS: dict[str, Any] = {**diskcache.DEFAULT_SETTINGS, "size_limit": 2**33, "eviction_policy": "none"}


class GuardedStore(diskcache.Cache):
    """A diskcache store that never takes a setting from its Settings table: known keys get
    STORE_SETTINGS' value, unknown keys are ignored, counters that are not counts read as 0."""

    def reset(self, key: Any, value: Any = diskcache.core.ENOVAL, update: bool = True) -> Any:
        if key in diskcache.core.METADATA:  # count, size, hits, misses: read, never run
            value = super().reset(key, value, update)
            if isinstance(value, bool) or not isinstance(value, int):
                setattr(self, key, 0)
                return 0
            return value
        if not isinstance(key, str) or key not in STORE_SETTINGS:
            return None  # a row diskcache never wrote: not a pragma, not an attribute
        return super().reset(key, STORE_SETTINGS[key], update)


def open_store(folder: Path) -> diskcache.Cache:
    """The diskcache store in `folder` (created if missing), its settings ours whatever its
    Settings table holds, and its value files confined to it (DataOnlyDisk). Raises OSError or
    sqlite3.Error when the folder cannot be used; any other failure to open a planted database
    is raised as sqlite3.DatabaseError."""
    try:
        return GuardedStore(str(folder), disk=DataOnlyDisk, **STORE_SETTINGS)
    except (OSError, sqlite3.Error):
        raise
    except Exception as exc:  # noqa: BLE001 - diskcache trips over a malformed Settings table
        raise sqlite3.DatabaseError(f"{folder / 'cache.db'} has a Settings table diskcache cannot read "
                                    f"({type(exc).__name__}: {exc}); delete the folder") from None
