"""The probe pass of a first run: what each test's first uncached LM call is, found by running it.

A test with no call log from an earlier run gives send-ahead nothing to predict. So, before the
run, such a test is run once with its clients in probe mode: a call the cache answers is answered
as usual (and counted nowhere), and the first call it cannot answer is noted, exactly as it would
be sent, and ends the test with `ProbeStop`. The noted calls are then sent ahead together, and the
real run finds their answers waiting. Nothing a probe does is reported or counted.
"""

from __future__ import annotations

import threading

from .cache import ChatRequest, ReplyCache
from .replies import Completion


class ProbeStop(BaseException):
    """Ends a probed test at its first call the cache cannot answer. A BaseException, like
    KeyboardInterrupt, so that a test's own `except Exception` does not swallow it."""


class Probe:
    """The first uncached call of each probed test, per test node id: (client role, request)."""

    def __init__(self) -> None:
        self.misses: dict[str, tuple[str, ChatRequest]] = {}
        self.current = ""  # the node id of the test being probed
        self._lock = threading.Lock()  # a test may call from threads of its own

    def answer(self, role: str, cache: ReplyCache, request: ChatRequest) -> Completion:
        """The cached reply, uncounted; else note the call (the test's first miss) and stop the test."""
        reply = cache.get(request)
        if reply is not None:
            return Completion(reply, True, 0.0, 0, 0.0)
        with self._lock:
            self.misses.setdefault(self.current, (role, request))
        raise ProbeStop(f"probe of {self.current}: first call the cache cannot answer")
