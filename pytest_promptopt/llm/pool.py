"""Running many calls at once: a bounded pool of worker threads, and identical calls in flight
sent once."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


class CallPool:
    """`map(call, items)`: `width` calls at a time, results in order, failures returned."""

    def __init__(self, width: int) -> None:
        self.width = max(1, width)
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None  # started on first use

    def map(self, call: Callable[[T], R], items: list[T]) -> list[R | BaseException]:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.width, thread_name_prefix="promptopt-lm")
            executor = self._executor
        futures = [executor.submit(call, item) for item in items]
        out: list[R | BaseException] = []
        for fut in futures:
            try:
                out.append(fut.result())
            except Exception as exc:  # noqa: BLE001 - reported per item
                out.append(exc)
        return out

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)


class InFlight:
    """Calls under the same key made at once run once: the others wait for its result."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[Hashable, Future[object]] = {}

    def run(self, key: Hashable, call: Callable[[], R]) -> R:
        with self._lock:
            waiting = self._running.get(key)
            if waiting is None:
                mine: Future[object] = Future()
                self._running[key] = mine
        if waiting is not None:
            return waiting.result()  # type: ignore[return-value]
        try:
            result = call()
            mine.set_result(result)
            return result
        except BaseException as exc:
            mine.set_exception(exc)
            raise
        finally:
            with self._lock:
                self._running.pop(key, None)
