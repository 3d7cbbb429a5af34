"""Sending one call with retries: backoff with jitter, Retry-After, the concurrency slots, and
the endpoint's health consulted before and told after."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from .accounting import UsageMeter
from .health import EndpointHealth
from ..errors import EndpointError

T = TypeVar("T")
MAX_BACKOFF_S = 30.0


class Retrying:
    """Runs an attempt until it succeeds, fails for good, or its retries are spent. An attempt
    fails only with an EndpointError (`retryable`, and optionally `retry_after` and `status`)."""

    def __init__(self, health: EndpointHealth, meter: UsageMeter, *, max_retries: int, concurrency: int,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.health = health
        self.max_retries = max_retries
        self._meter = meter
        self._sleep = sleep
        self._slots = threading.BoundedSemaphore(max(1, concurrency))

    def run(self, attempt: Callable[[], T], *, note: bool = True) -> tuple[T, int]:
        """`attempt()`'s result and how many attempts it took. `note`: the outcome counts toward
        the endpoint's health record."""
        down = self.health.refusal()
        if down is not None:
            self._meter.add(errors=1)
            raise down
        # A probe of an endpoint that is down gets one attempt: it only asks whether it is back.
        max_retries = 0 if self.health.down else self.max_retries
        attempts, slept_until = 0, 0.0
        while True:
            attempts += 1
            self.health.wait_for_pause(slept_until)
            result, error = self._once(attempt)
            self._meter.add(api_calls=1)
            if error is None:
                if note:
                    self.health.note(None)
                return result, attempts  # type: ignore[return-value]
            if not error.retryable or attempts > max_retries:
                raise self._given_up(error, attempts, note)
            self._meter.add(retries=1)
            slept_until = self._back_off(error, attempts)

    def _once(self, attempt: Callable[[], T]) -> tuple[T | None, EndpointError | None]:
        with self._slots:
            t0 = time.perf_counter()
            try:
                return attempt(), None
            except EndpointError as exc:
                return None, exc
            finally:
                self._meter.add(lm_seconds=time.perf_counter() - t0)

    def _given_up(self, error: EndpointError, attempts: int, note: bool) -> EndpointError:
        self._meter.add(errors=1)
        if error.retryable and note:  # a refused request (400, 401) says nothing about the endpoint's health
            self.health.note(error)
        if attempts == 1:
            return error
        given_up = EndpointError(f"{error} (gave up after {attempts} attempts)", base_url=error.base_url,
                                 model=error.model, retryable=error.retryable)
        given_up.__cause__ = error
        return given_up

    def _back_off(self, error: EndpointError, attempt: int) -> float:
        """Sleep before the next attempt; returns when (time.monotonic()) the sleep ends."""
        retry_after = getattr(error, "retry_after", None)
        delay = backoff(attempt, retry_after)
        slept_until = time.monotonic() + delay
        if retry_after is not None or getattr(error, "status", None) == 429:
            self.health.pause(slept_until)  # the endpoint said "slow down": to every call of the pool
        self._sleep(delay)
        return slept_until


def backoff(attempt: int, retry_after: float | None) -> float:
    """Seconds to wait before attempt `attempt + 1`: the server's Retry-After (bounded), else
    exponential with jitter."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), MAX_BACKOFF_S * 2)
    return min(MAX_BACKOFF_S, 0.5 * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
