"""Progress of `--optimize` on the terminal, and a report's sections written out.

In a terminal one line is rewritten in place as the search goes. Elsewhere (CI logs) each
update is a plain line, and a heartbeat thread adds one whenever `interval` seconds passed
without one, so a long stage (a slow endpoint, a big minibatch) never looks like a hang.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..report.run_report import Section

MIN_GAP_S = 2.0  # plain lines closer than this are merged (the next one says it all)


def fresh_line(tr: Any) -> None:
    """End the current line if anything is on it: pytest's write_line does so only after a file
    name, and under -q (or after the final [100%]) the test letters are on the current line."""
    tr.ensure_newline()
    writer = getattr(tr, "_tw", None)
    if writer is not None and getattr(writer, "width_of_current_line", 0):
        writer.line()


def write_apart(tr: Any, line: str) -> None:
    """`line` on a line of its own, flushed (CI logs show it as it happens)."""
    fresh_line(tr)
    tr.write_line(line)
    tr.flush()


def write_sections(tr: Any, sections: Sequence[Section]) -> None:
    """A report's sections on the terminal: a `===` separator per titled section, then its lines."""
    for section in sections:
        if section.title is not None:
            tr.write_sep("=", section.title)
        for line in section.lines:
            tr.write_line(line.text, red=line.red)


class Progress:
    """Per prompt group: stage, calls used of budget, best score so far, elapsed time, ETA.

    A context manager: the heartbeat runs inside the `with` block. `requests` counts the LM
    calls made so far; the loop hands over `best` (the best full-train score so far) with its
    first update, and `estimate` (the planned calls)."""

    def __init__(self, tr: Any, requests: Callable[[], int], label: str, budget: int | None, *,
                 interval: float = 30.0, tty: bool | None = None) -> None:
        self.tr = tr
        self.requests = requests
        self.label = label
        self.budget = budget
        self.interval = interval
        self.tty = bool(getattr(tr, "isatty", False)) if tty is None else tty
        self.started = time.monotonic()
        self.last = float("-inf")  # when the last line was written
        self.start_requests = requests()
        self.estimate = budget or 0
        self.stage = "starting"
        self.best: Callable[[], float | None] = lambda: None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._open_line = False  # in a terminal: a progress line is showing, not yet ended
        self._width = 0  # of the last line written
        # The heartbeat speaks while a test is being re-run, when pytest's fd capture has fd 1
        # pointing at a temporary file: it writes to a copy of the terminal's descriptor, taken
        # now, between tests. (A file without a descriptor, as under pytester, is not captured.)
        self._fd: int | None = None
        with contextlib.suppress(AttributeError, OSError, ValueError):
            self._fd = os.dup(tr._tw._file.fileno())

    def __call__(self, message: str, *, estimate: int | None = None,
                 best: Callable[[], float | None] | None = None) -> None:
        if estimate is not None:
            self.estimate = estimate
        if best is not None:
            self.best = best
        self.stage = message
        self._emit(heartbeat=False)

    def __enter__(self) -> Progress:  # noqa: PYI034 - Self needs Python 3.11; 3.10 is supported
        if self.tr is not None:
            fresh_line(self.tr)  # the heartbeat may speak first, and cannot see the test letters
            self._thread = threading.Thread(target=self._beat, name="promptopt-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            if self._open_line:
                self.tr.write_line("")  # end the rewritten line: what follows starts on a line of its own
                self._open_line = False
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _beat(self) -> None:
        while True:
            with self._lock:
                due = max(self.last, self.started) + self.interval - time.monotonic()
            if due > 0:
                if self._stop.wait(due):
                    return
                continue
            if self._stop.is_set():
                return
            self._emit(heartbeat=True)

    def _emit(self, *, heartbeat: bool) -> None:
        if self.tr is None:
            return
        with self._lock:
            now = time.monotonic()
            if not heartbeat and not self.tty and now - self.last < MIN_GAP_S:
                return
            text = self.text(now)
            if heartbeat and self._fd is not None:
                self.tr.flush()
                # the main thread left the cursor where this goes; in a terminal, over the old line
                line = "\r" + text.ljust(self._width) if self.tty else text + "\n"
                os.write(self._fd, line.encode("utf-8", "replace"))
            elif self.tty:
                if not self._open_line:
                    fresh_line(self.tr)
                self.tr.rewrite(text, erase=True)
                self.tr.flush()
            else:
                write_apart(self.tr, text)
            self._open_line = self.tty
            self._width = len(text)
            self.last = now

    def text(self, now: float) -> str:
        used = self.requests() - self.start_requests
        elapsed = now - self.started
        planned = min(self.budget or self.estimate, self.estimate) or self.estimate
        eta = f"ETA ~{elapsed * (planned / used - 1):.0f} s" if used and planned > used else "ETA -"
        of = f"/{self.budget}" if self.budget else ""
        best = self.best()
        shown = "-" if best is None else f"{best:.3f}"
        return (f"[promptopt] {self.label}: {self.stage} | calls {used}{of} | best train {shown} | "
                f"{elapsed:.0f} s | {eta}")
