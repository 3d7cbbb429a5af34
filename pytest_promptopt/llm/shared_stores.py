"""The backends of the shared reply tier: a directory, an object store through fsspec, Redis.

Each one stores opaque bytes under a content-addressed key and never overwrites a key that
exists (write-once: concurrent writers of one key write the same reply, so the first one wins
and no lock is needed). `get` returns None for an entry that is absent or not a plain entry
(a planted directory, symlink, FIFO or oversized object); it raises only when the tier as a
whole cannot be used, which `shared_cache.SharedTier` turns into one warning and local-only
caching. fsspec and redis are imported only when their backend is configured (extra `shared`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import stat
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

from ..errors import ConfigError

ENTRY_SUFFIX = ".json"
REDIS_PREFIX = "promptopt:reply:"


class DirectoryStore:
    """One file per entry, `<dir>/<key[:2]>/<key>.json`: written to a temporary file beside it,
    then hard-linked into place, which fails if the entry exists (atomic and exclusive, unlike a
    rename); readers never see half an entry. For a mounted share or a CI cache folder."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if not os.access(self.directory, os.R_OK | os.W_OK | os.X_OK):
            raise PermissionError(f"{self.directory} is not readable and writable")

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}{ENTRY_SUFFIX}"

    def get(self, key: str) -> bytes | None:
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(self._path(key), flags)
        except OSError:
            return None  # absent, a symlink, or not readable: a miss
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size > self.max_bytes:
                return None  # a planted folder, FIFO or device, or an oversized entry
            chunks: list[bytes] = []
            while sum(map(len, chunks)) <= self.max_bytes and (chunk := os.read(fd, self.max_bytes + 1)):
                chunks.append(chunk)
            return b"".join(chunks)
        except OSError:
            return None
        finally:
            os.close(fd)

    def add(self, key: str, data: bytes) -> None:
        path = self._path(key)
        if path.exists():
            return
        path.parent.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o644)
            with contextlib.suppress(FileExistsError):  # another writer was first: its entry stays
                os.link(tmp, path)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


class FsspecStore:
    """An object store through fsspec (`s3://bucket/prefix`, `gs://...`, `memory://...`): one
    object per entry; `add` is skipped when the object exists (object stores have no exclusive
    create that every backend supports, and two writers of one key write the same bytes)."""

    def __init__(self, url: str, max_bytes: int) -> None:
        self.url = url.rstrip("/")
        self.max_bytes = max_bytes
        self._fs: Any = None
        self._root = ""

    def open(self) -> None:
        import fsspec  # the `shared` extra; only when this backend is configured

        self._fs, self._root = fsspec.core.url_to_fs(self.url)
        try:  # unreachable or unauthorized: raises here, once (no bucket or folder is created)
            self._fs.ls(self._root)
        except FileNotFoundError:
            pass  # an empty prefix: the first entry written creates it

    def _path(self, key: str) -> str:
        return f"{self._root}/{key[:2]}/{key}{ENTRY_SUFFIX}"

    def get(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            info = self._fs.info(path)
        except FileNotFoundError:
            return None
        if info.get("type") != "file" or int(info.get("size") or 0) > self.max_bytes:
            return None
        try:
            with self._fs.open(path, "rb") as handle:
                return handle.read(self.max_bytes + 1)
        except FileNotFoundError:
            return None

    def add(self, key: str, data: bytes) -> None:
        path = self._path(key)
        if self._fs.exists(path):
            return
        self._fs.pipe_file(path, data)


class RedisStore:
    """Redis (`redis://host:port/db`, `rediss://` for TLS): `SET NX`, so an existing key is never
    overwritten; values longer than the cap are not read."""

    def __init__(self, url: str, max_bytes: int, timeout: float) -> None:
        self.url = url
        self.max_bytes = max_bytes
        self.timeout = timeout
        self._client: Any = None

    def open(self) -> None:
        import redis  # the `shared` extra; only when this backend is configured

        self._client = redis.Redis.from_url(self.url, socket_timeout=self.timeout,
                                            socket_connect_timeout=self.timeout)
        self._client.ping()

    def get(self, key: str) -> bytes | None:
        name = REDIS_PREFIX + key
        if self._client.strlen(name) > self.max_bytes:
            return None
        value = self._client.get(name)
        return value if isinstance(value, bytes) else None

    def add(self, key: str, data: bytes) -> None:
        self._client.set(REDIS_PREFIX + key, data, nx=True)


def store_for(url: str, max_bytes: int, timeout: float) -> DirectoryStore | FsspecStore | RedisStore:
    """The backend a `--promptopt-shared-cache` URL names: `redis://`/`rediss://` -> Redis,
    `file://` or a plain path -> a directory, any other `scheme://` -> fsspec."""
    scheme = urllib.parse.urlsplit(url).scheme.lower() if "://" in url else ""
    if scheme in ("redis", "rediss"):
        return RedisStore(url, max_bytes, timeout)
    if scheme == "file":
        path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
        if not path:
            raise ConfigError(f"shared cache URL {url!r}: file:// needs an absolute path, e.g. file:///srv/promptopt")
        return DirectoryStore(Path(path), max_bytes)
    if scheme:
        return FsspecStore(url, max_bytes)
    return DirectoryStore(Path(url), max_bytes)


def missing_dependency(url: str) -> str | None:
    """What to install for the backend `url` names, when its package is missing; else None."""
    scheme = urllib.parse.urlsplit(url).scheme.lower() if "://" in url else "file"
    needed = "redis" if scheme in ("redis", "rediss") else None if scheme == "file" else "fsspec"
    if needed is None or importlib.util.find_spec(needed) is not None:
        return None
    return (f"the {scheme}:// backend needs the package {needed!r}, which is not installed; "
            "install it with: pip install 'pytest-promptopt[shared]'")
