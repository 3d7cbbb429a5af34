"""Disk cache of LM replies (diskcache: SQLite underneath, safe across processes).

The key hashes everything that changes the answer: model, messages, sampling parameters,
tools/response format and a sample index for repeated draws. Never the API key, never the
endpoint's URL (an embedded server gets a new port every session).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import cached_property
from pathlib import Path
from typing import Any

import diskcache

CACHE_FORMAT = 1


class RecordMode(str, Enum):
    """How the cache is used, like VCR's record modes."""

    NORMAL = "normal"  # read; call on a miss and store
    REPLAY = "replay"  # read only; a miss is an error (the deterministic CI gate)
    REFRESH = "refresh"  # always call; overwrite
    OFF = "off"  # never read or write

    @property
    def reads(self) -> bool:
        return self in (RecordMode.NORMAL, RecordMode.REPLAY)

    @property
    def writes(self) -> bool:
        return self in (RecordMode.NORMAL, RecordMode.REFRESH)


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: tuple[tuple[str, str], ...]
    params: tuple[tuple[str, Any], ...] = ()
    sample: int = 0  # distinct draws of the same request (k-of-n repeats)

    @classmethod
    def build(
        cls,
        model: str,
        messages: Sequence[Mapping[str, str]],
        params: Mapping[str, Any] | None = None,
        sample: int = 0,
    ) -> ChatRequest:
        return cls(
            model,
            tuple((m["role"], m["content"]) for m in messages),
            tuple(sorted((params or {}).items())),
            sample,
        )

    @property
    def message_dicts(self) -> list[dict[str, str]]:
        return [{"role": r, "content": c} for r, c in self.messages]

    @property
    def param_dict(self) -> dict[str, Any]:
        return dict(self.params)

    @cached_property
    def cache_key(self) -> str:
        payload = {
            "v": CACHE_FORMAT,
            "model": self.model,
            "messages": self.messages,
            "params": self.params,
            "sample": self.sample,
        }
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Reply:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str = ""
    finish_reason: str = ""
    # (token, logprob) alternatives for the first generated token, most likely first; only
    # for requests sent with logprobs/top_logprobs (those have their own cache keys).
    top_logprobs: tuple[tuple[str, float], ...] = ()

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "v": CACHE_FORMAT,
            "text": self.text,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "model": self.model,
            "finish_reason": self.finish_reason,
        }
        if self.top_logprobs:
            record["top_logprobs"] = [[token, logprob] for token, logprob in self.top_logprobs]
        return record

    @classmethod
    def from_record(cls, record: Any) -> Reply | None:
        """A reply from a stored record; None for anything not written by this format."""
        if not isinstance(record, dict) or record.get("v") != CACHE_FORMAT:
            return None
        text = record.get("text")
        if not isinstance(text, str):
            return None
        top: list[tuple[str, float]] = []
        for pair in record.get("top_logprobs", ()):  # absent in records written before it existed
            if (not isinstance(pair, (list, tuple)) or len(pair) != 2 or not isinstance(pair[0], str)
                    or not isinstance(pair[1], (int, float)) or isinstance(pair[1], bool)):
                return None  # not ours: a miss, never a wrong verdict
            top.append((pair[0], float(pair[1])))
        return cls(
            text,
            int(record.get("prompt_tokens", 0)),
            int(record.get("completion_tokens", 0)),
            str(record.get("model", "")),
            str(record.get("finish_reason", "")),
            tuple(top),
        )


class ReplyCache:
    """The store behind every LM call. Falls back to no caching, with one warning, if the
    folder cannot be used (read-only disk, corrupted database)."""

    def __init__(self, directory: Path | None, mode: RecordMode = RecordMode.NORMAL) -> None:
        self.directory = directory
        self.mode = mode
        self._store: diskcache.Cache | None = None
        self._disabled_reason: str | None = None
        if directory is not None and mode is not RecordMode.OFF:
            self._open(directory)

    def _open(self, directory: Path) -> None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._store = diskcache.Cache(str(directory / "replies"), size_limit=2**33, eviction_policy="none")
            self._store.get("__probe__")
        except (OSError, sqlite3.Error) as exc:
            self._disable(f"cannot use the cache folder {directory}: {exc}")

    def _disable(self, reason: str) -> None:
        if self._disabled_reason is None:
            self._disabled_reason = reason
            warnings.warn(f"promptopt: {reason}; continuing without the cache", RuntimeWarning, stacklevel=3)
        self._store = None

    @property
    def enabled(self) -> bool:
        return self._store is not None

    def get(self, request: ChatRequest) -> Reply | None:
        if self._store is None or not self.mode.reads:
            return None
        try:
            record = self._store.get(request.cache_key)
        except (OSError, sqlite3.Error) as exc:
            self._disable(f"the cache could not be read: {exc}")
            return None
        except Exception:  # noqa: BLE001 - an unreadable pickle is a miss, never a wrong answer
            return None
        return Reply.from_record(record)

    def put(self, request: ChatRequest, reply: Reply) -> None:
        if self._store is None or not self.mode.writes:
            return
        try:
            self._store.set(request.cache_key, reply.to_record())
        except (OSError, sqlite3.Error) as exc:
            self._disable(f"the cache could not be written: {exc}")

    def get_record(self, key: str) -> Any:
        """A raw stored record by key (embeddings use this); None on a miss or when not reading."""
        if self._store is None or not self.mode.reads:
            return None
        try:
            return self._store.get(key)
        except (OSError, sqlite3.Error) as exc:
            self._disable(f"the cache could not be read: {exc}")
        except Exception:  # noqa: BLE001 - an unreadable pickle is a miss
            pass
        return None

    def put_record(self, key: str, record: Any) -> None:
        if self._store is None or not self.mode.writes:
            return
        try:
            self._store.set(key, record)
        except (OSError, sqlite3.Error) as exc:
            self._disable(f"the cache could not be written: {exc}")

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    def __len__(self) -> int:
        if self._store is None:
            return 0
        return sum(1 for k in self._store.iterkeys() if k != "__probe__")
