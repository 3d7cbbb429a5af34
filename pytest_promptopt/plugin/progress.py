"""Progress lines of `--optimize` on the terminal."""

from __future__ import annotations

import time
from typing import Any

from ..runtime import Runtime


def write_apart(tr: Any, line: str) -> None:
    """A line of its own: pytest's write_line starts a new line only after a file name, and
    under -q (or after the final [100%]) the test letters are on the current line."""
    tr.ensure_newline()
    writer = getattr(tr, "_tw", None)
    if writer is not None and getattr(writer, "width_of_current_line", 0):
        writer.line()
    tr.write_line(line)
    tr.flush()


class Progress:
    """Throttled progress lines: per prompt, step, best score, calls of budget, ETA."""

    def __init__(self, tr: Any, runtime: Runtime, label: str, budget: int | None) -> None:
        self.tr = tr
        self.runtime = runtime
        self.label = label
        self.budget = budget
        self.started = time.perf_counter()
        self.last = 0.0
        self.start_requests = self._requests()
        self.estimate = budget or 0

    def _requests(self) -> int:
        return sum(c.usage().requests for c in self.runtime.clients().values())

    def __call__(self, message: str, *, estimate: int | None = None) -> None:
        if estimate is not None:
            self.estimate = estimate
        now = time.perf_counter()
        if self.tr is None or now - self.last < 2.0:
            return
        self.last = now
        used = self._requests() - self.start_requests
        elapsed = now - self.started
        eta = ""
        planned = min(self.budget or self.estimate, self.estimate)
        if used and planned > used:
            eta = f", ETA ~{elapsed * (planned / used - 1):.0f} s"
        of = f"/{self.budget}" if self.budget else ""
        self.tr.write_line(f"[promptopt] {self.label}: {message} | calls {used}{of} | {elapsed:.0f} s{eta}")
        self.tr.flush()  # visible as it happens in CI logs too
