"""The run log: every candidate, score, gradient, critique and proposal, as JSON lines.

It makes a run auditable and resumable: on `--optimize-resume` the evaluations already in the
log are replayed from it (no test re-runs), and the LM cache makes the replayed proposals
free, so a seeded run continues exactly where it stopped.

The log lives in the cache folder, which may be shared or planted, so it is evidence, not
truth: it is read through the user-file guards, only events of this run (its key: prompts and
their digests, strategy, seed, budget) are replayed, and the memo re-runs what a decision rests
on (see `MemoProgram.verify`).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..prompts.prompt import Prompt
from ..userfiles import UserFileError, read_text

MAX_RUN_LOG_BYTES = 200_000_000  # a long medium run writes a few MB; a larger file is not ours


def run_key(prompts: Iterable[Prompt], strategy: str, seed: int, budget: int | None) -> str:
    # a retrieval pool file is part of the prompt: editing it starts a new run, as editing the prompt does
    parts = sorted(f"{p.key}:{p.source_digest}" + (f":{p.pool_digest}" if p.pool_digest else "") for p in prompts)
    blob = json.dumps([parts, strategy, seed, budget])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class RunLog:
    def __init__(self, directory: Path, key: str, *, resume: bool) -> None:
        self.directory = directory
        self.key = key
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.replayed: list[dict[str, Any]] = []
        existing = sorted(directory.glob(f"{key}-*.jsonl"))
        if resume and existing:
            self.path = existing[-1]
            self.replayed = list(read_events(self.path))
        else:
            self.path = directory / f"{key}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.jsonl"
        self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        if _ends_torn(self.path):  # a crash cut the last line: the next event starts on its own line
            self._handle.write("\n")
            self._handle.flush()

    @property
    def resumed(self) -> bool:
        return bool(self.replayed)

    def write(self, event: str, **data: Any) -> None:
        line = json.dumps({"t": round(time.time(), 3), "event": event, **data}, ensure_ascii=False, default=str)
        with self._lock:
            self._handle.write(line + "\n")
            self._handle.flush()  # a killed run keeps every finished line

    def replayed_events(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.replayed if e.get("event") == event]

    def close(self) -> None:
        self._handle.close()


def _ends_torn(path: Path) -> bool:
    """True when the file is not empty and its last line has no newline."""
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        if handle.tell() == 0:
            return False
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) != b"\n"


def read_events(path: Path) -> Iterable[dict[str, Any]]:
    """Events of a log, through the user-file guards (regular file, size, UTF-8); a line cut by
    a crash (the last one), or one that is not a JSON object, is skipped. An unreadable log has
    no events."""
    try:
        text, _ = read_text(path, limit=MAX_RUN_LOG_BYTES, what="run log")
    except (OSError, UserFileError):
        return
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(event, dict):
            yield event

