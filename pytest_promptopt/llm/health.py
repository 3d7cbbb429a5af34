"""Whether an endpoint is worth calling now: the circuit breaker and the rate-limit pause.

An endpoint whose calls failed `down_after` times in a row, every retry spent, is treated as
down: further calls fail at once, naming the endpoint and its last error, and one call is let
through per cool-down to see whether it is back. A run against a dead endpoint then ends in
seconds instead of retrying every remaining call with backoff. After a 429 (or a Retry-After),
no call is sent before the pause ends: the whole pool waits, not only the call that was
refused, so a rate limit is not hammered.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .endpoint import Endpoint
from .redaction import display_url
from ..errors import EndpointError

DOWN_AFTER = 3
DOWN_COOLDOWN_S = 10.0


class EndpointHealth:
    def __init__(self, endpoint: Callable[[], Endpoint], *, down_after: int = DOWN_AFTER,
                 down_cooldown_s: float = DOWN_COOLDOWN_S, sleep: Callable[[float], None] = time.sleep) -> None:
        self._endpoint = endpoint  # who is named in the "not sent" error (resolved lazily)
        self.down_after = max(1, down_after)
        self.down_cooldown_s = down_cooldown_s
        self._sleep = sleep
        self._lock = threading.Lock()
        self._failed_in_a_row = 0  # calls that failed after every retry, since the last success
        self._down_until = 0.0  # time.monotonic() before which calls are not sent
        self._last_failure = ""
        self._pause_until = 0.0  # time.monotonic() before which no call is sent (rate limit)

    @property
    def down(self) -> bool:
        """Down: the next call that goes out is a probe (one attempt: is it back?)."""
        with self._lock:
            return self._failed_in_a_row >= self.down_after

    def refusal(self) -> EndpointError | None:
        """The error to fail with at once while the endpoint is down; None to send the call
        (always, while it is up; once per cool-down, as a probe, while it is down)."""
        with self._lock:
            if self._failed_in_a_row < self.down_after:
                return None
            now = time.monotonic()
            if now >= self._down_until:
                self._down_until = now + self.down_cooldown_s  # this call is the probe
                return None
            wait = self._down_until - now
            last = self._last_failure
            failed = self._failed_in_a_row
        endpoint = self._endpoint()
        return EndpointError(
            f"LM call to {endpoint.describe()} not sent: the endpoint failed {failed} calls in a row "
            f"after retries (last: {last}); the next call goes out in {wait:.0f} s. "
            "Check that the server is up and reachable, or raise --promptopt-timeout/--promptopt-retries",
            base_url=display_url(endpoint.base_url), model=endpoint.model, retryable=True,
        )

    def note(self, failure: EndpointError | None) -> None:
        """Record a call's outcome: None for a success, else the error it failed with."""
        with self._lock:
            if failure is None:
                self._failed_in_a_row = 0
                self._down_until = 0.0
                return
            self._failed_in_a_row += 1
            self._last_failure = str(failure).split(" failed: ", 1)[-1][:300]
            if self._failed_in_a_row >= self.down_after and self._down_until <= time.monotonic():
                self._down_until = time.monotonic() + self.down_cooldown_s

    def assume_down(self, failure: EndpointError) -> None:
        """Start in the "down" state (calls sent ahead found the endpoint dead): the next call is
        a probe with one attempt, and while it fails the others fail at once."""
        with self._lock:
            if self._failed_in_a_row >= self.down_after:
                return
            self._failed_in_a_row = self.down_after
            self._last_failure = str(failure).split(" failed: ", 1)[-1][:300]
            self._down_until = 0.0  # the next call goes out, as the probe

    def pause(self, until: float) -> None:
        """No call goes out before `until` (time.monotonic()): the endpoint said "slow down"."""
        with self._lock:
            self._pause_until = max(self._pause_until, until)

    def wait_for_pause(self, slept_until: float) -> None:
        """Wait out the pause, beyond what this call already slept (to `slept_until`)."""
        with self._lock:
            wait = self._pause_until - max(time.monotonic(), slept_until)
        if wait > 0:
            self._sleep(wait)
