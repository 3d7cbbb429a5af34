"""OpenAI-compatible chat client: cache first, then the endpoint with retries.

One `LMClient` per role (task, judge, optimizer). Calls are bounded by a semaphore so the
optimizer can submit many at once; identical requests in flight are sent once. The client
composes its collaborators, one job each: `Connection` (the guarded HTTP client and its error
translation), `EndpointHealth` (circuit breaker and rate-limit pause), `Retrying` (retries and
backoff), `UsageMeter` and `Budget` (accounting), `EarlyCalls` (prefetch and send-ahead) and
`CallPool` (concurrency).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any

from .accounting import Budget, Price, UsageMeter
from .cache import ChatRequest, RecordMode, Reply, ReplyCache
from .connection import MAX_REPLY_BYTES, Connection
from .early import EarlyCalls
from .endpoint import API_KEY_MARK, Endpoint, endpoint_address, redact
from .health import DOWN_AFTER, DOWN_COOLDOWN_S, EndpointHealth
from .pool import CallPool, InFlight
from .probe import Probe
from .replies import Completion, clean_text, message_text, reply_from, token_count
from .retries import Retrying
from ..defaults import CONCURRENCY, RETRIES, TIMEOUT_S
from ..errors import CacheMissError
from ..usage import Usage

__all__ = [  # the names other modules import from here
    "API_KEY_MARK", "DOWN_AFTER", "MAX_REPLY_BYTES", "Budget", "Completion", "Endpoint", "LMClient", "Price",
    "clean_text", "endpoint_address", "message_text", "redact", "token_count",
]


class LMClient:
    def __init__(
        self,
        endpoint: Endpoint,
        cache: ReplyCache,
        *,
        timeout: float = TIMEOUT_S,
        max_retries: int = RETRIES,
        concurrency: int = CONCURRENCY,
        price: Price | None = None,
        sleep: Callable[[float], None] = time.sleep,
        resolve_base_url: Callable[[], str] | None = None,
        down_after: int = DOWN_AFTER,
        down_cooldown_s: float = DOWN_COOLDOWN_S,
        max_reply_bytes: int = MAX_REPLY_BYTES,
    ) -> None:
        self.cache = cache
        self.concurrency = max(1, concurrency)
        self.price = price or Price()
        self.budget: Budget | None = None
        self.probe: Probe | None = None  # a first run's probe pass: cached answers only, nothing counted
        self._meter = UsageMeter()
        self._connection = Connection(endpoint, timeout=timeout, max_reply_bytes=max_reply_bytes,
                                      resolve_base_url=resolve_base_url)
        self._health = EndpointHealth(lambda: self.endpoint, down_after=down_after,
                                      down_cooldown_s=down_cooldown_s, sleep=sleep)
        self._retrying = Retrying(self._health, self._meter, max_retries=max_retries,
                                  concurrency=self.concurrency, sleep=sleep)
        self._pool = CallPool(self.concurrency)
        self._in_flight = InFlight()
        self._early = EarlyCalls(cache, self._meter, health=self._health,
                                 endpoint=lambda: self.endpoint, send=partial(self._send, note=False),
                                 run_all=self._pool.map,
                                 complete_all=partial(self.complete_many, budgeted=False))

    @property
    def endpoint(self) -> Endpoint:
        """The endpoint; for a lazy one, its base URL is known once the first call went out."""
        return self._connection.endpoint

    def usage(self) -> Usage:
        return self._meter.snapshot()

    # -- calls -----------------------------------------------------------------------------
    def request(self, messages: Iterable[Mapping[str, str]], params: Mapping[str, Any] | None = None,
                *, model: str | None = None, sample: int = 0) -> ChatRequest:
        return ChatRequest.build(model or self.endpoint.model, list(messages), params, sample,
                                 self.endpoint.served_by)

    def complete(self, request: ChatRequest, *, budgeted: bool = True) -> Completion:
        if self.probe is not None:
            return self.probe.answer(self.endpoint.role, self.cache, request)
        # a prepaid request was sent and counted by the prefetch: this call is its use, not a hit
        prepaid = budgeted and self.budget is not None and self.budget.reserve(request.cache_key)
        counted = budgeted and not prepaid
        if counted:
            self._meter.add(requests=1)
        fresh = self._early.take(request)
        if fresh is not None:
            return fresh
        cached = self.cache.get(request)
        if cached is not None:
            if counted:
                self._meter.add(cache_hits=1, cached_tokens=cached.total_tokens)  # apart from spent tokens
            return Completion(cached, True, 0.0, 0, 0.0)
        if self.cache.mode is RecordMode.REPLAY:
            raise CacheMissError(
                f"replay mode: no recorded reply for this call to {self.endpoint.describe()}; "
                "record it with --promptopt-record=normal (or drop --promptopt-record=replay)"
            )
        return self._in_flight.run(request.cache_key, partial(self._send, request))

    def complete_many(self, requests: list[ChatRequest], *, budgeted: bool = True) -> list[Completion | BaseException]:
        """Run requests concurrently through the pool; failures are returned, not raised."""
        return self._pool.map(lambda r: self.complete(r, budgeted=budgeted), requests)

    # -- calls sent early (see EarlyCalls) ---------------------------------------------------
    def prefetch(self, calls: list[ChatRequest | None]) -> None:
        """Warm the cache for the calls tests are about to make, paid from the budget when sent."""
        self._early.prefetch(calls, self.budget)

    def send_ahead(self, requests: list[ChatRequest]) -> list[Completion | BaseException]:
        """Send uncached requests for a plain run's tests; each reply goes to the test that asks."""
        return self._early.send_ahead(requests)

    def unused_ahead(self) -> int:
        """How many replies sent ahead no call asked for (then forgets them)."""
        return self._early.unused()

    # -- the endpoint ----------------------------------------------------------------------
    def connect(self) -> None:
        """Build the HTTP client now (importing openai costs about a second, once per process);
        for the embedded model this starts the server."""
        self._connection.client().chat.completions  # noqa: B018 - openai imports its resources on first access

    def _send(self, request: ChatRequest, *, note: bool = True) -> Completion:
        """Send `request` with retries, cache the reply and account for it. `note`: the outcome
        counts toward the endpoint's health record."""
        started = time.perf_counter()
        reply, attempts = self._retrying.run(partial(self._attempt, request), note=note)
        cost = self.price.cost(reply.prompt_tokens, reply.completion_tokens)
        self._meter.add(prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens, cost=cost)
        if self.budget is not None:
            self.budget.add_tokens(reply.total_tokens)
        self.cache.put(request, reply)
        return Completion(reply, False, time.perf_counter() - started, attempts, cost)

    def _attempt(self, request: ChatRequest) -> Reply:
        response = self._connection.call(
            lambda client: client.chat.completions.create(
                model=request.model,
                messages=request.message_dicts,  # type: ignore[arg-type]
                **request.param_dict,
            ),
            request.model,
        )
        return reply_from(response, partial(self._connection.error, model=request.model))

    def close(self) -> None:
        self._pool.close()
        self._connection.close()
