"""Calls sent before their caller asks for them: the optimizer's budgeted prefetch, and a plain
run's send-ahead, whose replies are handed to the test that asks as if it had made the call."""

from __future__ import annotations

import threading
from collections.abc import Callable
from .accounting import Budget, UsageMeter
from .cache import ChatRequest, RecordMode, ReplyCache
from .endpoint import Endpoint
from .health import EndpointHealth
from .redaction import display_url
from .replies import Completion
from ..errors import EndpointError

Results = list[Completion | BaseException]


class EarlyCalls:
    """One client's calls sent early. `send` makes one call with retries, outside the budget and
    the endpoint's health record; `run_all` runs a function over requests concurrently;
    `complete_all` completes requests as the client does, outside the budget."""

    def __init__(self, cache: ReplyCache, meter: UsageMeter, *, health: EndpointHealth,
                 endpoint: Callable[[], Endpoint], send: Callable[[ChatRequest], Completion],
                 run_all: Callable[[Callable[[ChatRequest], Completion], list[ChatRequest]], Results],
                 complete_all: Callable[[list[ChatRequest]], Results]) -> None:
        self.cache = cache
        self.health = health
        self.down_after = health.down_after
        self._meter = meter
        self._endpoint = endpoint
        self._send = send
        self._run_all = run_all
        self._complete_all = complete_all
        self._lock = threading.Lock()
        # Replies sent ahead by `send_ahead` and not yet asked for: the test that asks gets the
        # completion as it was made (not cached, its cost and latency), exactly as if it had
        # sent the call itself. Whatever is left at the end was sent for nothing.
        self._fresh: dict[str, Completion] = {}

    def take(self, request: ChatRequest) -> Completion | None:
        """The completion sent ahead for `request`, handed over once; None when there is none."""
        if not self._fresh:
            return None
        with self._lock:
            return self._fresh.pop(request.cache_key, None)

    def prefetch(self, calls: list[ChatRequest | None], budget: Budget | None) -> None:
        """Warm the cache concurrently for the calls tests are about to make, in the order they
        will make them (None: a call that cannot be predicted, such as a judge's). A request
        sent here is paid for from the budget when it is sent (the cap counts what is sent), and
        only while the budget still has room for it after every call the tests make before it,
        cached or not: so each one sent is one the tests use, and a warm rerun, which sends
        nothing, counts the same calls. Without a budget nothing is counted here: each test's
        own call is, and hits the cache."""
        if not self.cache.enabled or self.cache.mode is not RecordMode.NORMAL:
            return
        before = 0  # calls the tests make ahead of the next request
        todo: dict[ChatRequest, None] = {}  # an ordered set
        for request in calls:
            if request is None or request in todo or self.cache.get(request) is not None:
                before += 1
                continue
            if budget is not None and not budget.prepay(request.cache_key, before):
                break
            todo[request] = None
        if budget is not None:
            self._meter.add(requests=len(todo))  # as the budget counts them
        if todo:
            self._complete_all(list(todo))

    def send_ahead(self, requests: list[ChatRequest]) -> Results:
        """Send uncached requests concurrently for a plain run's tests, which ask for them later.

        Not counted as requests (each test's own call is); a success is cached and kept for the
        test that asks (see `take`). A failure is not cached: the test makes the call again,
        inline, and reports it as it would have. After `down_after` failures in a row nothing
        more is sent ahead; when those failures say the endpoint is unreachable (retryable),
        the inline calls start with the endpoint down: the first is a probe with one attempt,
        and while it fails the others fail at once (a dead endpoint costs the tests their usual
        few seconds, not a round of retries per call first).
        """
        streak = _Streak(self.down_after)

        def send(request: ChatRequest) -> Completion:
            if streak.stopped():
                raise EndpointError(f"not sent ahead: {self.down_after} calls ahead failed in a row",
                                    base_url=display_url(self._endpoint().base_url), model=request.model,
                                    retryable=True)
            try:
                completion = self._send(request)
            except EndpointError as exc:
                if streak.failed(exc):
                    self.health.assume_down(exc)
                raise
            streak.succeeded()
            with self._lock:
                self._fresh[request.cache_key] = completion
            return completion

        return self._run_all(send, list(dict.fromkeys(requests)))

    def unused(self) -> int:
        """How many replies sent ahead no call asked for (then forgets them: later calls, such
        as the optimizer's re-runs, find them in the cache as usual)."""
        with self._lock:
            unused, self._fresh = len(self._fresh), {}
        return unused


class _Streak:
    """Failures in a row of one send-ahead: all of them, and those that say the endpoint is
    unreachable (retryable), reset by a success."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._failed = self._unreachable = 0

    def stopped(self) -> bool:
        with self._lock:
            return self._failed >= self.limit

    def failed(self, error: EndpointError) -> bool:
        """Count a failure; True when the endpoint now looks dead (`limit` unreachable in a row)."""
        with self._lock:
            self._failed += 1
            self._unreachable = self._unreachable + 1 if error.retryable else 0
            return self._unreachable >= self.limit

    def succeeded(self) -> None:
        with self._lock:
            self._failed = self._unreachable = 0
