"""What calls cost and how many may be made: prices, the running usage of a client, the budget."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from ..errors import BudgetExhausted
from ..usage import Usage


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens."""

    input: float = 0.0
    output: float = 0.0

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input + completion_tokens * self.output) / 1e6


class UsageMeter:
    """A client's running `Usage`, added to from many threads; read as a snapshot."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._usage = Usage()

    def snapshot(self) -> Usage:
        with self._lock:
            return self._usage

    def add(self, **delta: Any) -> None:
        with self._lock:
            self._usage = self._usage + Usage(**delta)


class Budget:
    """A hard cap on LM requests (cached or not, so a run is reproducible) and tokens."""

    def __init__(self, max_requests: int | None = None, max_tokens: int | None = None) -> None:
        self.max_requests = max_requests
        self.max_tokens = max_tokens
        self.requests = 0
        self.tokens = 0
        self.exhausted = False  # set once a request was refused
        self._lock = threading.Lock()
        # Requests a prefetch sent ahead of the tests, paid for when sent: the test's own call
        # of the same request is then not counted again (cache key -> count).
        self._prepaid: dict[str, int] = {}

    def _refusal(self) -> str | None:
        if self.max_requests is not None and self.requests >= self.max_requests:
            return f"LM call budget of {self.max_requests} reached"
        if self.max_tokens is not None and self.tokens >= self.max_tokens:
            return f"token budget of {self.max_tokens} reached"
        return None

    def reserve(self, key: str | None = None) -> bool:
        """Count one request, or raise BudgetExhausted. True when it was prepaid under `key`
        (sent and counted by a prefetch): then nothing is counted again."""
        with self._lock:
            if key is not None and self._prepaid.get(key, 0) > 0:
                self._prepaid[key] -= 1
                return True
            refusal = self._refusal()
            if refusal is not None:
                self.exhausted = True
                raise BudgetExhausted(refusal)
            self.requests += 1
            return False

    def prepay(self, key: str, before: int = 0) -> bool:
        """Count a request sent ahead of its caller (a prefetch); False, and nothing counted,
        when the budget has no room for it after the `before` requests made ahead of it."""
        with self._lock:
            if self.max_requests is not None and self.requests + before >= self.max_requests:
                return False
            if self._refusal() is not None:
                return False
            self.requests += 1
            self._prepaid[key] = self._prepaid.get(key, 0) + 1
            return True

    def drop_prepaid(self) -> None:
        """Forget prepaid requests nobody made (they stay counted: they were sent), so a later
        call of the same request counts as it would have without the prefetch."""
        with self._lock:
            self._prepaid.clear()

    def charge(self, requests: int) -> None:
        """Count requests replayed from the optimizer's memo, exactly as if they were made."""
        with self._lock:
            if self.max_requests is not None and self.requests + requests > self.max_requests:
                self.requests = self.max_requests
                self.exhausted = True
                raise BudgetExhausted(f"LM call budget of {self.max_requests} reached")
            self.requests += requests

    def add_tokens(self, n: int) -> None:
        with self._lock:
            self.tokens += n

    @property
    def remaining(self) -> int | None:
        return None if self.max_requests is None else max(0, self.max_requests - self.requests)
