"""Disk cache of LM replies (diskcache: SQLite underneath, safe across processes).

The key hashes everything that changes the answer: who serves it (`served_by`: the embedded
model's weights file, or a real endpoint's address), the model name, messages, sampling
parameters, tools/response format and a sample index for repeated draws. Never the API key, nor
the credentials or query of a URL, nor the embedded server's port (new every session).

Entries are JSON text, never pickles: a cache folder may be committed, shared or planted, and
reading it must not run code. Every entry is checked field by field on read; anything else is a
miss that is called again and rewritten.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import sqlite3
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import cached_property
from pathlib import Path
from typing import Any

import diskcache

# DataOnlyDisk and NotData are imported from here too
from .store import DataOnlyDisk, ForeignFile, NotData, open_store  # noqa: F401

CACHE_FORMAT = 2  # 2: JSON text entries, `served_by` in the key (1 was pickled dicts)
MAX_TOKEN_COUNT = 10**12  # a stored token count above this is not a count


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
    # Who answers: "embedded:<weights file>" for the embedded model (whatever model name was
    # asked for, it answers), else the endpoint's address without credentials. Part of the key:
    # an answer is only served for a request to the model that produced it.
    served_by: str = ""

    @classmethod
    def build(
        cls,
        model: str,
        messages: Sequence[Mapping[str, str]],
        params: Mapping[str, Any] | None = None,
        sample: int = 0,
        served_by: str = "",
    ) -> ChatRequest:
        return cls(
            model,
            tuple((m["role"], m["content"]) for m in messages),
            tuple(sorted((params or {}).items())),
            sample,
            served_by,
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
            "served_by": self.served_by,
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
        """A reply from a stored record; None (a miss) for anything not written by this format:
        wrong types, non-finite numbers, counts that are not counts, unencodable text."""
        if not isinstance(record, dict) or record.get("v") != CACHE_FORMAT:
            return None
        text, model, finish = record.get("text"), record.get("model", ""), record.get("finish_reason", "")
        if not all(_is_clean_text(value) for value in (text, model, finish)):
            return None
        counts = (record.get("prompt_tokens", 0), record.get("completion_tokens", 0))
        if not all(_is_count(value) for value in counts):
            return None
        top = _logprob_pairs(record.get("top_logprobs", []))
        if top is None:
            return None
        return cls(text, counts[0], counts[1], model, finish, top)


def _is_clean_text(value: Any) -> bool:
    """A str that encodes as UTF-8 (no lone surrogates)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKEN_COUNT


def _logprob_pairs(raw: Any) -> tuple[tuple[str, float], ...] | None:
    """[[token, logprob], ...] as pairs; None if any item has another shape."""
    if not isinstance(raw, list):
        return None
    pairs: list[tuple[str, float]] = []
    for pair in raw:
        if not isinstance(pair, list) or len(pair) != 2 or not _is_clean_text(pair[0]):
            return None
        logprob = pair[1]
        if isinstance(logprob, bool) or not isinstance(logprob, (int, float)) or not math.isfinite(logprob):
            return None
        pairs.append((pair[0], float(logprob)))
    return tuple(pairs)


def encode_record(record: Mapping[str, Any]) -> str:
    """A record as the JSON text that is stored (keys sorted, so entries diff cleanly)."""
    return json.dumps(record, ensure_ascii=False, sort_keys=True, allow_nan=False)


def decode_record(value: Any) -> Any:
    """The stored JSON text back as data; None for anything that is not such text."""
    if not isinstance(value, str):
        return None
    try:
        return json.loads(value, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a value a reply holds")


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
            self._store = open_store(directory / "replies")
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
        return Reply.from_record(self.get_record(request.cache_key))

    def put(self, request: ChatRequest, reply: Reply) -> None:
        self.put_record(request.cache_key, reply.to_record())

    def get_record(self, key: str) -> Any:
        """The stored record (JSON data) by key; None on a miss, when not reading, or for
        anything that is not JSON text (a pickle is never loaded)."""
        if self._store is None or not self.mode.reads:
            return None
        try:
            return decode_record(self._store.get(key))
        except (OSError, sqlite3.Error) as exc:
            self._disable(f"the cache could not be read: {exc}")
        except ForeignFile:  # a planted row: gone, without touching the file it names
            if self.mode.writes:
                with contextlib.suppress(Exception):
                    self._store.delete(key)
        except Exception:  # noqa: BLE001 - a pickle or an unreadable value is a miss, never a wrong answer
            pass
        return None

    def put_record(self, key: str, record: Any) -> None:
        if self._store is None or not self.mode.writes:
            return
        try:
            self._store.set(key, encode_record(record))
        except (OSError, sqlite3.Error) as exc:
            self._disable(f"the cache could not be written: {exc}")

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    def __len__(self) -> int:
        if self._store is None:
            return 0
        return len(self._store)  # diskcache's own count: no key is loaded, so none is unpickled
