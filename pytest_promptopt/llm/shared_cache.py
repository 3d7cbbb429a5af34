"""The shared tier under the local reply cache: one store for a team's runners and developers.

Read-through: a local miss looks in the shared tier before the endpoint, and a shared hit is
copied into the local cache. Write-once: a reply stored locally is also added to the shared
tier under the same content-addressed key (the local cache's request key, which holds the
model's identity), and an existing entry is never overwritten, so writers need no locks.
Entries are the local cache's JSON records, verified on read the same way (`Reply.from_record`)
and size-capped: never executed; anything else is a miss. A tier that cannot be reached warns
once and the run goes on with the local cache alone.
"""

from __future__ import annotations

import re
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

from .. import defaults
from .cache import ChatRequest, RecordMode, Reply, ReplyCache, decode_record, encode_record
from .redaction import display_url, redact, url_secrets
from .shared_stores import store_for

T = TypeVar("T")
KEY = re.compile(r"[0-9a-f]{64}")  # a request key: sha256 hex, so never a path or a pattern


class SharedStore(Protocol):
    """A backend: bytes by key; `add` never overwrites. `get` is None for an absent or unusable
    entry and raises only when the store as a whole cannot be used (as `open` does)."""

    def open(self) -> None: ...

    def get(self, key: str) -> bytes | None: ...

    def add(self, key: str, data: bytes) -> None: ...


class SharedTier:
    """A store with the rules every backend shares: key check, size cap, JSON-only decoding,
    hit counting, and one warning then local-only when the store fails."""

    def __init__(self, store: SharedStore, url: str, max_bytes: int = defaults.SHARED_CACHE_MAX_ENTRY_BYTES) -> None:
        self.store = store
        self.url = url
        self.max_bytes = max_bytes
        self.hits = 0  # replies this tier served (each then a local entry, outside replay)
        self.down: str | None = None  # why the tier is not used, after its one warning
        self._lock = threading.Lock()
        self._guard(store.open)

    def _guard(self, action: Callable[[], T]) -> T | None:
        if self.down is not None:
            return None
        try:
            return action()
        except Exception as exc:  # noqa: BLE001 - whatever the backend raises, the run goes on locally
            self._fail(exc)
            return None

    def _fail(self, exc: Exception) -> None:
        with self._lock:
            if self.down is not None:
                return
            reason = redact(f"{type(exc).__name__}: {exc}", url_secrets(self.url))
            self.down = reason
        warnings.warn(f"promptopt: the shared cache {display_url(self.url)} cannot be used ({reason}); "
                      "continuing with the local cache only", RuntimeWarning, stacklevel=4)

    def get(self, key: str) -> Reply | None:
        if not KEY.fullmatch(key):
            return None
        data = self._guard(lambda: self.store.get(key))
        if not isinstance(data, bytes) or len(data) > self.max_bytes:
            return None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return None
        reply = Reply.from_record(decode_record(text))
        if reply is not None:
            with self._lock:
                self.hits += 1
        return reply

    def add(self, key: str, reply: Reply) -> None:
        data = encode_record(reply.to_record()).encode("utf-8")
        if KEY.fullmatch(key) and len(data) <= self.max_bytes:
            self._guard(lambda: self.store.add(key, data))


class TieredReplyCache(ReplyCache):
    """The local cache with the shared tier under it (replies only; embeddings stay local)."""

    def __init__(self, directory: Path | None, mode: RecordMode, shared: SharedTier) -> None:
        super().__init__(directory, mode)
        self.shared = shared

    def get(self, request: ChatRequest) -> Reply | None:
        reply = super().get(request)
        if reply is not None or not self.mode.reads:
            return reply
        reply = self.shared.get(request.cache_key)
        if reply is not None:
            super().put(request, reply)  # outside replay, the next lookup is a local hit
        return reply

    def put(self, request: ChatRequest, reply: Reply) -> None:
        super().put(request, reply)
        if self.mode.writes:
            self.shared.add(request.cache_key, reply)


def open_cache(directory: Path | None, mode: RecordMode, shared_url: str | None,
               timeout: float = defaults.SHARED_CACHE_TIMEOUT_S) -> ReplyCache:
    """The reply cache a session uses: local only, or local over the shared tier at `shared_url`."""
    if not shared_url or mode is RecordMode.OFF:
        return ReplyCache(directory, mode)
    tier = SharedTier(store_for(shared_url, defaults.SHARED_CACHE_MAX_ENTRY_BYTES, timeout), shared_url)
    return TieredReplyCache(directory, mode, tier)


def shared_hits(cache: ReplyCache) -> int:
    """Replies the shared tier served this session (0 without one)."""
    return cache.shared.hits if isinstance(cache, TieredReplyCache) else 0
