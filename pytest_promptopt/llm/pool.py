"""Running many calls at once: a bounded pool of worker threads, and identical calls in flight
sent once."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class CallPool:
    """`map(call, items)`: `width` calls at a time, results in order, failures returned.

    The workers are daemon threads: on Ctrl-C the calls not started are dropped and those in
    flight are abandoned, so the process exits at once instead of waiting for replies that may
    take minutes (a ThreadPoolExecutor's threads are joined at exit)."""

    def __init__(self, width: int) -> None:
        self.width = max(1, width)
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []  # started on first use

    def map(self, call: Callable[[T], R], items: list[T]) -> list[R | BaseException]:
        self._start()
        jobs = [_Job(call, item) for item in items]
        for job in jobs:
            self._queue.put(job)
        try:
            out: list[R | BaseException] = []
            for job in jobs:
                try:
                    out.append(job.future.result())
                except Exception as exc:  # noqa: BLE001 - reported per item
                    out.append(exc)
            return out
        except BaseException:  # interrupted: drop what has not started, abandon what has
            for job in jobs:
                job.future.cancel()
            raise

    def _start(self) -> None:
        with self._lock:
            while len(self._workers) < self.width:
                worker = threading.Thread(target=self._work, name="promptopt-lm", daemon=True)
                worker.start()
                self._workers.append(worker)

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            job.run()

    def close(self) -> None:
        """Stop the workers once they are idle (never waits for them)."""
        with self._lock:
            for _ in self._workers:
                self._queue.put(None)
            self._workers = []


class _Job:
    def __init__(self, call: Callable[[Any], Any], item: Any) -> None:
        self.call = call
        self.item = item
        self.future: Future[Any] = Future()

    def run(self) -> None:
        if not self.future.set_running_or_notify_cancel():
            return  # cancelled before it started
        try:
            self.future.set_result(self.call(self.item))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller of map
            self.future.set_exception(exc)


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
