"""LMClient against the real ScriptedServer: retries, faults, accounting, concurrency, budget."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest

from pytest_promptopt.llm.cache import ChatRequest, ReplyCache
from pytest_promptopt.llm.client import (
    Budget,
    Completion,
    Endpoint,
    LMClient,
    Price,
)
from pytest_promptopt.errors import BudgetExhausted, EndpointError
from pytest_promptopt.llm.probe import Probe, ProbeStop
from pytest_promptopt.testing import Fault, ScriptedServer, echo_last_user
from pytest_promptopt.usage import Usage

API_KEY = "sk-very-secret-key-1234567890"


def stop_later(server: ScriptedServer) -> None:
    # stop() waits for the serve loop's 0.5 s poll; let it finish in the background.
    threading.Thread(target=server.stop, daemon=True).start()


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    srv = ScriptedServer().start()
    yield srv
    stop_later(srv)


class Sleeps(list[float]):
    """The injected `sleep=`: records the requested waits instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


ClientFactory = Callable[..., LMClient]


@pytest.fixture
def make_client(server: ScriptedServer, sleeps: Sleeps) -> Iterator[ClientFactory]:
    clients: list[LMClient] = []

    def make(cache: ReplyCache | None = None, *, base_url: str | None = None,
             sleep: Callable[[float], None] | None = None, identity: str = "", **kwargs: Any) -> LMClient:
        kwargs.setdefault("max_retries", 3)
        kwargs.setdefault("timeout", 10.0)
        client = LMClient(Endpoint(base_url or server.base_url, "test-model", api_key=API_KEY, identity=identity),
                          cache if cache is not None else ReplyCache(None), sleep=sleep or sleeps, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def msgs(text: str = "hello world") -> list[dict[str, str]]:
    return [{"role": "system", "content": "be nice"}, {"role": "user", "content": text}]


def ask(client: LMClient, text: str = "hello world") -> Completion:
    return client.complete(client.request(msgs(text)))


# -- status codes ---------------------------------------------------------------------------------


def test_plain_success(make_client: ClientFactory, server: ScriptedServer, sleeps: Sleeps) -> None:
    done = ask(make_client(), "ping")
    assert done.text == "ping" and done.attempts == 1 and not done.cached
    assert done.reply.finish_reason == "stop" and done.reply.model == "test-model"
    assert server.requests[0]["model"] == "test-model"
    assert server.requests[0]["messages"] == msgs("ping")
    assert server.headers[0]["authorization"] == f"Bearer {API_KEY}"
    assert sleeps == []


def test_sampling_params_reach_the_server(make_client: ClientFactory, server: ScriptedServer) -> None:
    client = make_client()
    client.complete(client.request(msgs(), {"temperature": 0.25, "max_tokens": 7, "seed": 3}))
    body = server.requests[0]
    assert (body["temperature"], body["max_tokens"], body["seed"]) == (0.25, 7, 3)


def test_429_with_retry_after_seconds(make_client: ClientFactory, server: ScriptedServer, sleeps: Sleeps) -> None:
    server.fail_next(Fault(status=429, retry_after="3"))
    done = ask(make_client())
    assert done.text == "hello world" and done.attempts == 2
    assert sleeps == [3.0]
    assert server.count == 2


def test_429_with_retry_after_http_date(make_client: ClientFactory, server: ScriptedServer, sleeps: Sleeps) -> None:
    server.fail_next(Fault(status=429, retry_after=formatdate(time.time() + 10, usegmt=True)))
    ask(make_client())
    # An HTTP date is converted to the seconds left until then (whole-second resolution).
    assert len(sleeps) == 1 and 7.0 <= sleeps[0] <= 11.0


def test_429_without_retry_after_uses_backoff(
    make_client: ClientFactory, server: ScriptedServer, sleeps: Sleeps
) -> None:
    server.fail_next(Fault(status=429), times=2)
    assert ask(make_client()).attempts == 3
    assert len(sleeps) == 2
    # exponential backoff with jitter: 0.5 s then 1 s, each scaled by 0.5..1
    assert 0.25 <= sleeps[0] <= 0.5
    assert 0.5 <= sleeps[1] <= 1.0


def test_429_pauses_the_whole_pool(make_client: ClientFactory, server: ScriptedServer, sleeps: Sleeps) -> None:
    """After a 429 with Retry-After, the next call of the client waits too (it was never refused
    itself): a rate-limited endpoint is not hammered by the rest of the pool."""
    client = make_client()
    server.fail_next(Fault(status=429, retry_after="2"))
    ask(client, "first")
    ask(client, "second")
    assert sleeps[0] == 2.0  # the refused call's own backoff
    assert len(sleeps) == 2 and 1.0 < sleeps[1] <= 2.0  # the other call waited out the pause
    assert server.count == 3


def test_500_does_not_pause_the_pool(make_client: ClientFactory, server: ScriptedServer, sleeps: Sleeps) -> None:
    client = make_client()
    server.fail_next(Fault(status=500))
    ask(client, "first")
    ask(client, "second")
    assert len(sleeps) == 1  # only the failed call's own backoff


def test_send_ahead_hands_the_completion_to_its_caller(make_client: ClientFactory, server: ScriptedServer,
                                                       tmp_path: Path) -> None:
    """A call sent ahead is the asking test's own call: not cached, counted once, and a reply
    nobody asked for is reported as unused."""
    client = make_client(ReplyCache(tmp_path))
    requests = [client.request(msgs(t)) for t in ("a", "b", "c")]
    client.send_ahead([*requests, requests[0]])
    assert server.count == 3
    assert client.usage().requests == 0 and client.usage().api_calls == 3
    done = client.complete(requests[0])
    assert not done.cached and done.attempts == 1 and done.reply.completion_tokens == 1
    assert client.complete(requests[0]).cached  # a second ask is a plain cache hit
    assert client.usage().requests == 2 and client.usage().api_calls == 3 and server.count == 3
    assert client.unused_ahead() == 2 and client.unused_ahead() == 0
    assert client.complete(requests[1]).cached  # once forgotten, the cache serves it


def test_send_ahead_failures_leave_the_endpoint_health_alone(make_client: ClientFactory, server: ScriptedServer,
                                                             tmp_path: Path) -> None:
    """Failures ahead stop the sending after `down_after` in a row and are not cached: the tests
    then make their calls and report them as always (the first goes out as the probe, D18)."""
    client = make_client(ReplyCache(tmp_path), max_retries=0, down_after=2)
    server.responder = lambda messages, body: (_ for _ in ()).throw(RuntimeError("no"))
    out = client.send_ahead([client.request(msgs(str(i))) for i in range(6)])
    assert all(isinstance(r, EndpointError) for r in out)
    assert server.count <= 2 + client.concurrency  # stopped sending once 2 failed in a row
    server.responder = echo_last_user
    assert ask(client, "0").text == "0"  # not cached as a failure, and the endpoint is not "down"


def test_a_dead_endpoint_seen_ahead_is_down_for_the_inline_calls(make_client: ClientFactory, server: ScriptedServer,
                                                                  sleeps: Sleeps, tmp_path: Path) -> None:
    """D18: once the calls sent ahead found the endpoint unreachable (`down_after` in a row),
    the tests' own calls start with it down: the first is a probe with one attempt, the next
    fails at once, instead of each spending its retries again."""
    client = make_client(ReplyCache(tmp_path), max_retries=2, down_after=2, concurrency=1, down_cooldown_s=3600)
    server.fail_every(1, Fault(status=503))
    client.send_ahead([client.request(msgs(str(i))) for i in range(4)])
    sent, slept = server.count, len(sleeps)
    with pytest.raises(EndpointError) as probe:
        ask(client, "0")
    assert "HTTP 503" in str(probe.value) and "gave up" not in str(probe.value)  # one attempt
    with pytest.raises(EndpointError, match="not sent"):
        ask(client, "1")
    assert server.count == sent + 1 and len(sleeps) == slept  # no retry, no backoff


def test_real_sleep_honours_retry_after(make_client: ClientFactory, server: ScriptedServer) -> None:
    server.fail_next(Fault(status=429, retry_after="0.2"))
    client = make_client(sleep=time.sleep)
    t0 = time.perf_counter()
    done = ask(client)
    assert done.attempts == 2
    assert time.perf_counter() - t0 >= 0.2  # it really waited (time.sleep never returns early)


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
def test_server_errors_retried_then_success(
    make_client: ClientFactory, server: ScriptedServer, sleeps: Sleeps, status: int
) -> None:
    server.fail_next(Fault(status=status), times=2)
    client = make_client()
    done = ask(client)
    assert done.text == "hello world" and done.attempts == 3
    assert server.count == 3 and len(sleeps) == 2
    usage = client.usage()
    assert (usage.requests, usage.api_calls, usage.retries, usage.errors) == (1, 3, 2, 0)


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_client_errors_not_retried(
    make_client: ClientFactory, server: ScriptedServer, sleeps: Sleeps, status: int
) -> None:
    server.fail_next(Fault(status=status))
    client = make_client()
    with pytest.raises(EndpointError) as info:
        ask(client)
    assert f"HTTP {status}" in str(info.value)
    assert not info.value.retryable
    assert server.count == 1 and sleeps == []
    assert client.usage().errors == 1 and client.usage().retries == 0


def test_exhausted_retries_message(make_client: ClientFactory, server: ScriptedServer, sleeps: Sleeps) -> None:
    server.fail_next(Fault(status=503), times=10)
    client = make_client(max_retries=2)
    with pytest.raises(EndpointError) as info:
        ask(client)
    message = str(info.value)
    assert server.base_url in message
    assert "HTTP 503" in message
    assert "gave up after 3 attempts" in message
    assert "test-model" in message
    assert API_KEY not in message and API_KEY[:12] not in message
    assert API_KEY not in repr(client.endpoint)
    assert isinstance(info.value, AssertionError)  # fails the calling test
    assert info.value.base_url == server.base_url and info.value.retryable
    assert server.count == 3 and len(sleeps) == 2
    assert client.usage().errors == 1


def test_connection_refused(make_client: ClientFactory, sleeps: Sleeps) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(EndpointError) as info:
        ask(make_client(base_url=url, max_retries=1))
    assert "connection error" in str(info.value) and url in str(info.value)
    assert API_KEY not in str(info.value)
    assert len(sleeps) == 1


# -- broken responses -------------------------------------------------------------------------------


def hold_the_first_request(server: ScriptedServer) -> None:
    """The first request is never answered while the test runs (the server's stop releases it):
    the client's timeout fires however slow the machine is; later requests are answered."""
    first = iter([True])
    server.hold(when=lambda body: next(first, False))


def test_timeout_then_success(make_client: ClientFactory, server: ScriptedServer, sleeps: Sleeps) -> None:
    hold_the_first_request(server)
    done = ask(make_client(timeout=0.5, max_retries=1))
    assert done.attempts == 2 and done.text == "hello world"
    assert len(sleeps) == 1


def test_timeout_exhausted(make_client: ClientFactory, server: ScriptedServer) -> None:
    hold_the_first_request(server)
    with pytest.raises(EndpointError) as info:
        ask(make_client(timeout=0.5, max_retries=0))
    assert "timeout" in str(info.value) and "0.5 s" in str(info.value)
    assert info.value.retryable


@pytest.mark.parametrize("kind", ["cut", "malformed", "empty", "content_type"])
def test_broken_bodies_are_retried(
    make_client: ClientFactory, server: ScriptedServer, sleeps: Sleeps, kind: str
) -> None:
    server.fail_next(Fault(kind=kind))
    client = make_client()
    done = ask(client)
    assert done.text == "hello world" and done.attempts == 2
    assert server.count == 2 and len(sleeps) == 1
    assert client.usage().retries == 1


@pytest.mark.parametrize(("kind", "words"), [("empty", "no choices"), ("malformed", "bad response"),
                                             ("content_type", "the response")])
def test_broken_bodies_exhausted(
    make_client: ClientFactory, server: ScriptedServer, kind: str, words: str
) -> None:
    server.fail_next(Fault(kind=kind), times=2)
    with pytest.raises(EndpointError) as info:
        ask(make_client(max_retries=1))
    assert words in str(info.value)
    assert server.base_url in str(info.value)


# -- accounting ------------------------------------------------------------------------------------


def test_usage_accounting(tmp_path: Path, make_client: ClientFactory, server: ScriptedServer) -> None:
    client = make_client(ReplyCache(tmp_path), price=Price(input=1.0, output=2.0))
    server.fail_next(Fault(status=500))
    first = ask(client, "one two three")  # 500, then success
    assert first.cost == pytest.approx((5 * 1.0 + 3 * 2.0) / 1e6)  # "be nice" + 3 words in, 3 out
    hit = ask(client, "one two three")  # cache hit
    assert hit.cached and hit.cost == 0.0 and hit.attempts == 0
    server.fail_next(Fault(status=400))
    with pytest.raises(EndpointError):
        ask(client, "four")
    usage = client.usage()
    assert usage.requests == 3
    assert usage.api_calls == 3  # 500, 200, 400: every HTTP attempt
    assert usage.cache_hits == 1
    assert usage.retries == 1
    assert usage.errors == 1
    # tokens count only when spent: the cache hit adds none
    assert (usage.prompt_tokens, usage.completion_tokens, usage.tokens) == (5, 3, 8)
    assert usage.cost == pytest.approx(first.cost)
    assert usage.lm_seconds > 0


def test_usage_snapshot_arithmetic() -> None:
    a = Usage(requests=3, api_calls=2, prompt_tokens=5, completion_tokens=1, cost=0.5)
    b = Usage(requests=1, api_calls=1, prompt_tokens=2, cost=0.25)
    assert a - b == Usage(requests=2, api_calls=1, prompt_tokens=3, completion_tokens=1, cost=0.25)
    assert (a + b).tokens == 8


def test_usage_is_a_snapshot(make_client: ClientFactory) -> None:
    client = make_client()
    before = client.usage()
    ask(client)
    assert before.requests == 0 and client.usage().requests == 1
    assert (client.usage() - before).api_calls == 1


# -- concurrency -----------------------------------------------------------------------------------


class InFlight:
    """A responder that counts requests in flight at once. While `hold` is set, each request
    waits until `hold` requests are in flight together, so a concurrent batch shows its full
    width however loaded the machine is (no clock decides it); a serial one cannot get there,
    and after `patience` seconds the first request gives up waiting and lets everything through."""

    def __init__(self, hold: int = 0, patience: float = 30.0) -> None:
        self.hold, self.patience = hold, patience
        self.active = self.peak = 0
        self.lock = threading.Lock()
        self.everyone = threading.Event()

    def __call__(self, messages: list[dict[str, str]], body: dict[str, Any]) -> str:
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
            if self.hold and self.active >= self.hold:
                self.everyone.set()
        if self.hold and not self.everyone.wait(self.patience):
            self.everyone.set()
        with self.lock:
            self.active -= 1
        return echo_last_user(messages, body)


def test_complete_many_runs_concurrently(make_client: ClientFactory) -> None:
    in_flight = InFlight()
    srv = ScriptedServer(in_flight).start()
    try:
        requests = [ChatRequest.build("test-model", msgs(f"question {i}")) for i in range(8)]
        # the whole-call timeout outlasts the responder's patience: a serial run fails on the count
        wide = make_client(base_url=srv.base_url, concurrency=8, timeout=60.0)
        narrow = make_client(base_url=srv.base_url, concurrency=1)
        for client in (wide, narrow):
            ask(client, "warm-up")
        in_flight.peak, in_flight.hold = 0, 8  # the warm-ups ran with hold 0: the gate is still closed
        parallel = wide.complete_many(requests)
        parallel_peak, in_flight.peak, in_flight.hold = in_flight.peak, 0, 0
        serial = narrow.complete_many(requests)
    finally:
        stop_later(srv)
    # results come back in request order
    assert [c.text for c in parallel] == [f"question {i}" for i in range(8)]
    assert [c.text for c in serial] == [f"question {i}" for i in range(8)]
    assert srv.count == 18
    assert (parallel_peak, in_flight.peak) == (8, 1)  # all 8 in flight together; one at a time


def test_concurrency_limit_is_respected() -> None:
    # each request waits until 3 are in flight together (not a sleep that hopes they overlap)
    in_flight = InFlight(hold=3)
    srv = ScriptedServer(in_flight).start()
    client = LMClient(Endpoint(srv.base_url, "m"), ReplyCache(None), concurrency=3, sleep=lambda s: None)
    try:
        out = client.complete_many([ChatRequest.build("m", msgs(str(i))) for i in range(12)])
    finally:
        client.close()
        stop_later(srv)
    assert all(isinstance(c, Completion) for c in out)
    assert in_flight.peak == 3  # the limit holds, and it is not serial either


def test_identical_inflight_requests_sent_once(make_client: ClientFactory) -> None:
    slow = ScriptedServer(delay=0.3).start()
    try:
        client = make_client(base_url=slow.base_url, concurrency=8)  # no cache: only dedup can help
        request = ChatRequest.build("test-model", msgs("same"))
        out = client.complete_many([request] * 6)
    finally:
        stop_later(slow)
    assert slow.count == 1
    assert [c.text for c in out] == ["same"] * 6


def test_complete_many_returns_failures(make_client: ClientFactory) -> None:
    def responder(messages: list[dict[str, str]], body: dict[str, Any]) -> str:
        text = echo_last_user(messages, body)
        if text == "boom":
            raise RuntimeError("scripted failure")
        return text

    srv = ScriptedServer(responder).start()
    try:
        client = make_client(base_url=srv.base_url, max_retries=0)
        out = client.complete_many([ChatRequest.build("test-model", msgs(t)) for t in ("a", "boom", "c")])
    finally:
        stop_later(srv)
    assert isinstance(out[0], Completion) and out[0].text == "a"
    assert isinstance(out[1], EndpointError) and "HTTP 500" in str(out[1])
    assert isinstance(out[2], Completion) and out[2].text == "c"


def test_lazy_base_url_resolved_only_on_a_miss(tmp_path: Path, make_client: ClientFactory,
                                               server: ScriptedServer) -> None:
    embedded = "embedded:model.gguf:1"  # a lazy (embedded) endpoint's key carries its own identity
    ask(make_client(ReplyCache(tmp_path), identity=embedded))  # record
    resolved: list[str] = []

    def resolve() -> str:
        resolved.append(server.base_url)
        return server.base_url

    lazy = make_client(ReplyCache(tmp_path), base_url="http://not-started.invalid/v1", resolve_base_url=resolve,
                       identity=embedded)
    assert ask(lazy).cached
    assert resolved == []  # a cache hit must not start the embedded server
    assert ask(lazy, "new question").text == "new question"
    assert resolved == [server.base_url]
    assert lazy.endpoint.base_url == server.base_url


def test_prefetch_pays_for_what_it_sends_and_the_call_is_then_free(tmp_path: Path, make_client: ClientFactory,
                                                                   server: ScriptedServer) -> None:
    client = make_client(ReplyCache(tmp_path))
    client.budget = Budget(max_requests=3)
    requests = [client.request(msgs(t)) for t in ("a", "b", "c")]
    client.prefetch([*requests, requests[0]])  # duplicates are fetched once
    assert server.count == 3
    assert client.usage().requests == 3 and client.budget.requests == 3  # sent, so counted
    assert all(client.complete(r).cached for r in requests)  # prepaid: not counted again
    assert server.count == 3 and client.budget.requests == 3 and client.usage().requests == 3
    with pytest.raises(BudgetExhausted):  # a prepaid request is free once; asked again, it counts
        client.complete(requests[0])


def test_prefetch_sends_only_what_the_budget_has_room_for(tmp_path: Path, make_client: ClientFactory,
                                                          server: ScriptedServer) -> None:
    client = make_client(ReplyCache(tmp_path))
    client.budget = Budget(max_requests=2)
    requests = [client.request(msgs(t)) for t in ("a", "b", "c")]
    client.prefetch(requests)
    assert server.count == 2 and client.budget.requests == 2
    assert client.complete(requests[0]).cached and client.complete(requests[1]).cached
    with pytest.raises(BudgetExhausted):
        client.complete(requests[2])
    assert server.count == 2  # never more sent than the budget


def test_prefetch_leaves_room_for_the_calls_made_before_it(tmp_path: Path, make_client: ClientFactory,
                                                            server: ScriptedServer) -> None:
    client = make_client(ReplyCache(tmp_path))
    cached = client.request(msgs("cached"))
    client.complete(cached)
    client.budget = Budget(max_requests=3)
    a, b = client.request(msgs("a")), client.request(msgs("b"))
    client.prefetch([cached, None, a, b])  # a cached call and an unpredictable one come first
    assert server.count == 2 and client.budget.requests == 1  # only `a` fits after those two
    client.complete(cached)
    client.budget.reserve()  # the unpredictable call
    assert client.complete(a).cached and client.budget.requests == 3
    with pytest.raises(BudgetExhausted):
        client.complete(b)
    assert server.count == 2


# -- budget ----------------------------------------------------------------------------------------


def test_budget_caps_requests(tmp_path: Path, make_client: ClientFactory, server: ScriptedServer) -> None:
    client = make_client(ReplyCache(tmp_path))
    client.budget = Budget(max_requests=2)
    ask(client, "a")
    ask(client, "a")  # a cache hit still counts, so a run is reproducible
    assert client.budget.remaining == 0
    with pytest.raises(BudgetExhausted, match="budget of 2"):
        ask(client, "b")
    assert server.count == 1


def test_budget_caps_tokens(make_client: ClientFactory, server: ScriptedServer) -> None:
    client = make_client()
    client.budget = Budget(max_tokens=5)
    ask(client, "one two three")  # 5 prompt + 3 completion tokens
    assert client.budget.tokens == 8
    with pytest.raises(BudgetExhausted, match="token budget of 5"):
        ask(client, "four")
    assert server.count == 1


def test_budget_in_complete_many(make_client: ClientFactory, server: ScriptedServer) -> None:
    client = make_client(concurrency=1)
    client.budget = Budget(max_requests=3)
    out = client.complete_many([ChatRequest.build("test-model", msgs(str(i))) for i in range(5)])
    assert sum(isinstance(c, Completion) for c in out) == 3
    assert sum(isinstance(c, BudgetExhausted) for c in out) == 2
    assert server.count == 3


def test_unlimited_budget() -> None:
    budget = Budget()
    for _ in range(100):
        budget.reserve()
    assert budget.remaining is None and budget.requests == 100


# -- probe mode (a first run's probe pass) ----------------------------------------------------------


def test_probe_mode_answers_from_the_cache_and_stops_at_the_first_miss(
        make_client: ClientFactory, server: ScriptedServer, tmp_path: Path) -> None:
    """Cached calls are answered and counted nowhere; the first miss is noted as sent, never
    sent, and stops the caller with an exception that `except Exception` does not catch."""
    client = make_client(ReplyCache(tmp_path))
    ask(client, "cached")
    before, probe = client.usage(), Probe()
    client.probe, probe.current = probe, "test_x.py::test_a"
    assert ask(client, "cached").text == "cached"
    with pytest.raises(ProbeStop):
        try:
            ask(client, "missed")
        except Exception:  # noqa: BLE001 - what a test's own handler would do
            pytest.fail("a test's `except Exception` caught the probe's stop")
    assert not issubclass(ProbeStop, Exception)
    assert probe.misses == {"test_x.py::test_a": ("task", client.request(msgs("missed")))}
    assert server.count == 1 and client.usage() == before  # only the first, unprobed call was sent
    client.probe = None
    assert ask(client, "missed").text == "missed" and server.count == 2
