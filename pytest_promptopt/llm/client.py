"""OpenAI-compatible chat client: cache first, then the endpoint with retries.

One `LMClient` per role (task, judge, optimizer). Calls are bounded by a semaphore so the
optimizer can submit many at once; identical requests in flight are sent once.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from . import redaction
from .cache import MAX_TOKEN_COUNT, ChatRequest, RecordMode, Reply, ReplyCache
from ..defaults import CONCURRENCY, RETRIES, TIMEOUT_S
from ..errors import BudgetExhausted, CacheMissError, EndpointError
from .redaction import display_url, url_secrets
from ..usage import Usage

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
MAX_BACKOFF_S = 30.0
MAX_REPLY_BYTES = 16 * 1024 * 1024  # a chat reply is text: anything larger is refused, not buffered
# An endpoint whose calls failed this many times in a row, every retry spent, is treated as down:
# further calls fail at once, naming the endpoint and its last error, and one call is let
# through per cool-down to see whether it is back. A run against a dead endpoint then ends in
# seconds instead of retrying every remaining call with backoff.
_TRANSPORT_MODULES = frozenset({"httpx", "httpx2", "httpcore", "httpcore2", "h11", "anyio", "ssl"})
API_KEY_MARK = "[api key]"
DOWN_AFTER = 3
DOWN_COOLDOWN_S = 10.0

if TYPE_CHECKING:
    import openai  # imported on first use: it costs ~1 s, paid by every pytest run (and xdist worker)


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    model: str
    api_key: str = field(default="", repr=False)
    role: str = "task"
    # The cache key's `served_by`: set for the embedded model (its weights file), else derived
    # from the base URL (see `endpoint_address`).
    identity: str = ""

    def describe(self) -> str:
        return f"model {self.model!r} at {display_url(self.base_url)}"

    def redact(self, text: str) -> str:
        """`text` without the API key or the base URL's credentials and query values."""
        return redaction.redact(redaction.redact(text, [self.api_key], API_KEY_MARK), url_secrets(self.base_url))

    @property
    def served_by(self) -> str:
        return self.identity or endpoint_address(self.base_url)


def endpoint_address(base_url: str) -> str:
    """Who answers, for the cache key: scheme, host, port and path of the base URL, without the
    user, password or query (credentials never go into a key)."""
    parts = urllib.parse.urlsplit(base_url.strip())
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme.lower()}://{(parts.hostname or '').lower()}{port}{parts.path.rstrip('/')}"


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens."""

    input: float = 0.0
    output: float = 0.0

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input + completion_tokens * self.output) / 1e6


@dataclass(frozen=True)
class Completion:
    reply: Reply
    cached: bool
    latency_s: float
    attempts: int
    cost: float

    @property
    def text(self) -> str:
        return self.reply.text


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
        self.max_reply_bytes = max_reply_bytes
        self.endpoint = endpoint
        self._resolve_base_url = resolve_base_url  # lazy endpoint: the embedded server starts on first miss
        self.cache = cache
        self.timeout = timeout
        self.max_retries = max_retries
        self.concurrency = max(1, concurrency)
        self.price = price or Price()
        self.budget: Budget | None = None
        self._sleep = sleep
        self._slots = threading.BoundedSemaphore(self.concurrency)
        self._lock = threading.Lock()
        self._inflight: dict[str, Future[Completion]] = {}
        self._usage = Usage()
        self._openai: openai.OpenAI | None = None
        self._pool: ThreadPoolExecutor | None = None
        self.down_after = max(1, down_after)
        self.down_cooldown_s = down_cooldown_s
        self._failed_in_a_row = 0  # calls that failed after every retry, since the last success
        self._down_until = 0.0  # time.monotonic() before which calls are not sent
        self._last_failure = ""
        # After a 429 (or a Retry-After), no call of this client is sent before this time: the
        # whole pool waits, not only the call that was refused, so a rate limit is not hammered.
        self._pause_until = 0.0
        # Replies sent ahead by `send_ahead` and not yet asked for: the test that asks gets the
        # completion as it was made (not cached, its cost and latency), exactly as if it had
        # sent the call itself. Whatever is left at the end was sent for nothing.
        self._fresh: dict[str, Completion] = {}

    # -- accounting ------------------------------------------------------------------------
    def usage(self) -> Usage:
        with self._lock:
            return self._usage

    def _account(self, **delta: Any) -> None:
        with self._lock:
            self._usage = self._usage + Usage(**delta)

    # -- calls -----------------------------------------------------------------------------
    def request(self, messages: Iterable[Mapping[str, str]], params: Mapping[str, Any] | None = None,
                *, model: str | None = None, sample: int = 0) -> ChatRequest:
        return ChatRequest.build(model or self.endpoint.model, list(messages), params, sample,
                                 self.endpoint.served_by)

    def complete(self, request: ChatRequest, *, budgeted: bool = True) -> Completion:
        # a prepaid request was sent and counted by the prefetch: this call is its use, not a hit
        prepaid = budgeted and self.budget is not None and self.budget.reserve(request.cache_key)
        if budgeted and not prepaid:
            self._account(requests=1)
        if self._fresh:
            with self._lock:
                fresh = self._fresh.pop(request.cache_key, None)
            if fresh is not None:
                return fresh
        cached = self.cache.get(request)
        if cached is not None:
            if budgeted and not prepaid:
                self._account(cache_hits=1)  # tokens count only when spent
            return Completion(cached, True, 0.0, 0, 0.0)
        if self.cache.mode is RecordMode.REPLAY:
            raise CacheMissError(
                f"replay mode: no recorded reply for this call to {self.endpoint.describe()}; "
                "record it with --promptopt-record=normal (or drop --promptopt-record=replay)"
            )
        key = request.cache_key
        with self._lock:
            waiting = self._inflight.get(key)
            if waiting is None:
                mine: Future[Completion] = Future()
                self._inflight[key] = mine
        if waiting is not None:
            return waiting.result()
        try:
            completion = self._call_with_retries(request)
            mine.set_result(completion)
            return completion
        except BaseException as exc:
            mine.set_exception(exc)
            raise
        finally:
            with self._lock:
                self._inflight.pop(key, None)

    def prefetch(self, calls: list[ChatRequest | None]) -> None:
        """Warm the cache concurrently for the calls tests are about to make, in the order they
        will make them (None: a call that cannot be predicted, such as a judge's). A request
        sent here is paid for from the budget when it is sent (the cap counts what is sent), and
        only while the budget still has room for it after every call the tests make before it,
        cached or not: so each one sent is one the tests use, and a warm rerun, which sends
        nothing, counts the same calls. Without a budget nothing is counted here: each test's
        own call is, and hits the cache."""
        if not self.cache.enabled or self.cache.mode is not RecordMode.NORMAL:
            return
        budget, before = self.budget, 0  # before: calls the tests make ahead of the next request
        todo: dict[ChatRequest, None] = {}  # an ordered set
        for request in calls:
            if request is None or request in todo or self.cache.get(request) is not None:
                before += 1
                continue
            if budget is not None and not budget.prepay(request.cache_key, before):
                break
            todo[request] = None
        if budget is not None:
            self._account(requests=len(todo))  # as the budget counts them
        if todo:
            self.complete_many(list(todo), budgeted=False)

    def send_ahead(self, requests: list[ChatRequest]) -> list[Completion | BaseException]:
        """Send uncached requests concurrently for a plain run's tests, which ask for them later.

        Not counted as requests (each test's own call is); a success is cached and kept for the
        test that asks (see `_fresh`). A failure is not cached and leaves the endpoint's health
        record alone: the test makes the call again, inline, and reports it as it would have.
        After `down_after` failures in a row nothing more is sent ahead (a dead endpoint costs
        the tests their usual few seconds, not a round of retries per call first).
        """
        failed_in_a_row = 0
        lock = threading.Lock()

        def send(request: ChatRequest) -> Completion:
            nonlocal failed_in_a_row
            with lock:
                if failed_in_a_row >= self.down_after:
                    raise EndpointError(f"not sent ahead: {self.down_after} calls ahead failed in a row",
                                        base_url=display_url(self.endpoint.base_url), model=request.model,
                                        retryable=True)
            try:
                completion = self._call_with_retries(request, note=False)
            except EndpointError:
                with lock:
                    failed_in_a_row += 1
                raise
            with lock:
                failed_in_a_row = 0
            with self._lock:
                self._fresh[request.cache_key] = completion
            return completion

        return self._map(send, list(dict.fromkeys(requests)))

    def unused_ahead(self) -> int:
        """How many replies sent ahead no call asked for (then forgets them: later calls, such
        as the optimizer's re-runs, find them in the cache as usual)."""
        with self._lock:
            unused, self._fresh = len(self._fresh), {}
        return unused

    def complete_many(self, requests: list[ChatRequest], *, budgeted: bool = True) -> list[Completion | BaseException]:
        """Run requests concurrently through the pool; failures are returned, not raised."""
        return self._map(lambda r: self.complete(r, budgeted=budgeted), requests)

    def _map(self, call: Callable[[ChatRequest], Completion],
             requests: list[ChatRequest]) -> list[Completion | BaseException]:
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="promptopt-lm")
        futures = [self._pool.submit(call, r) for r in requests]
        out: list[Completion | BaseException] = []
        for fut in futures:
            try:
                out.append(fut.result())
            except Exception as exc:  # noqa: BLE001 - reported per request
                out.append(exc)
        return out

    def _client(self) -> openai.OpenAI:
        with self._lock:
            return self._client_locked()

    def connect(self) -> None:
        """Build the HTTP client now (importing openai costs about a second, once per process);
        for the embedded model this starts the server."""
        self._client().chat.completions  # noqa: B018 - openai imports its resources on first access

    def _client_locked(self) -> openai.OpenAI:
        if self._openai is None:
            import openai

            from .transport import GuardedTransport

            if self._resolve_base_url is not None:  # the identity (the cache key) stays the model's
                self.endpoint = replace(self.endpoint, base_url=self._resolve_base_url())
            self._openai = openai.OpenAI(
                base_url=self.endpoint.base_url,
                api_key=self.endpoint.api_key or "not-needed",
                timeout=self.timeout,
                max_retries=0,  # retries are ours: Retry-After, budget and accounting
                http_client=openai.DefaultHttpxClient(transport=GuardedTransport()),
            )
        return self._openai

    def _endpoint_down(self) -> EndpointError | None:
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
        return EndpointError(
            f"LM call to {self.endpoint.describe()} not sent: the endpoint failed {failed} calls in a row "
            f"after retries (last: {last}); the next call goes out in {wait:.0f} s. "
            "Check that the server is up and reachable, or raise --promptopt-timeout/--promptopt-retries",
            base_url=display_url(self.endpoint.base_url), model=self.endpoint.model, retryable=True,
        )

    def _wait_for_pause(self, slept_until: float) -> None:
        """Wait out the pool's pause, beyond what this call already slept (to `slept_until`)."""
        with self._lock:
            wait = self._pause_until - max(time.monotonic(), slept_until)
        if wait > 0:
            self._sleep(wait)

    def _pause(self, until: float) -> None:
        with self._lock:
            self._pause_until = max(self._pause_until, until)

    def _note_outcome(self, failure: EndpointError | None) -> None:
        with self._lock:
            if failure is None:
                self._failed_in_a_row = 0
                self._down_until = 0.0
                return
            self._failed_in_a_row += 1
            self._last_failure = str(failure).split(" failed: ", 1)[-1][:300]
            if self._failed_in_a_row >= self.down_after and self._down_until <= time.monotonic():
                self._down_until = time.monotonic() + self.down_cooldown_s

    def _call_with_retries(self, request: ChatRequest, *, note: bool = True) -> Completion:
        """Send with retries; `note`: the outcome counts toward the endpoint's health record."""
        down = self._endpoint_down()
        if down is not None:
            self._account(errors=1)
            raise down
        # A probe of an endpoint that is down gets one attempt: it only asks whether it is back.
        max_retries = 0 if self._failed_in_a_row >= self.down_after else self.max_retries
        attempt = 0
        started = time.perf_counter()
        slept_until = 0.0
        while True:
            attempt += 1
            self._wait_for_pause(slept_until)
            with self._slots:
                t0 = time.perf_counter()
                try:
                    reply = self._send(request)
                    error: EndpointError | None = None
                except EndpointError as exc:
                    error = exc
                finally:
                    self._account(lm_seconds=time.perf_counter() - t0)
            if error is None:
                cost = self.price.cost(reply.prompt_tokens, reply.completion_tokens)
                self._account(api_calls=1, prompt_tokens=reply.prompt_tokens,
                              completion_tokens=reply.completion_tokens, cost=cost)
                if self.budget is not None:
                    self.budget.add_tokens(reply.total_tokens)
                if note:
                    self._note_outcome(None)
                self.cache.put(request, reply)
                return Completion(reply, False, time.perf_counter() - started, attempt, cost)
            self._account(api_calls=1)
            if not error.retryable or attempt > max_retries:
                self._account(errors=1)
                if error.retryable and note:  # a refused request (400, 401) says nothing about the endpoint's health
                    self._note_outcome(error)
                if attempt > 1:
                    raise EndpointError(f"{error} (gave up after {attempt} attempts)",
                                        base_url=error.base_url, model=error.model,
                                        retryable=error.retryable) from error
                raise error
            self._account(retries=1)
            retry_after = getattr(error, "retry_after", None)
            delay = self._backoff(attempt, retry_after)
            slept_until = time.monotonic() + delay
            if retry_after is not None or getattr(error, "status", None) == 429:
                self._pause(slept_until)  # the endpoint said "slow down": to every call of the pool
            self._sleep(delay)

    @staticmethod
    def _backoff(attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), MAX_BACKOFF_S * 2)
        return min(MAX_BACKOFF_S, 0.5 * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)

    def _send(self, request: ChatRequest) -> Reply:
        import openai

        from .transport import ReplyRefused, call_limits

        client = self._client()
        where = self.endpoint.describe()

        def fail(what: str, retryable: bool, retry_after: float | None = None, status: int | None = None) -> EndpointError:
            # an error body may quote the key or the URL back (proxies, "invalid key sk-..."): never repeat it
            what = self.endpoint.redact(what)
            err = EndpointError(f"LM call to {where} failed: {what}", base_url=display_url(self.endpoint.base_url),
                                model=request.model, retryable=retryable)
            err.retry_after = retry_after  # type: ignore[attr-defined]
            err.status = status  # type: ignore[attr-defined]
            return err

        try:
            with call_limits(self.timeout, self.max_reply_bytes):  # the whole call, headers and body
                response = client.chat.completions.create(
                    model=request.model,
                    messages=request.message_dicts,  # type: ignore[arg-type]
                    **request.param_dict,
                )
        except ReplyRefused as exc:  # asking again would fetch the same oversized reply
            raise fail(f"reply refused: {exc}", False) from None
        except openai.APITimeoutError:
            raise fail(f"no answer within {self.timeout:g} s (timeout), which bounds the whole call: "
                       "connecting, headers and body", True) from None
        except openai.APIConnectionError as exc:
            refused = _cause_of_type(exc, ReplyRefused)
            if refused is not None:  # asking again would fetch the same oversized reply
                raise fail(f"reply refused: {refused}", False) from None
            raise fail(f"connection error: {_cause(exc)}", True) from None
        except openai.APIStatusError as exc:
            status = exc.status_code
            raise fail(f"HTTP {status}: {_short(exc.message)}", status in RETRYABLE_STATUS,
                       _retry_after(exc.response.headers), status) from None
        except openai.APIError as exc:  # malformed body and the like
            raise fail(f"bad response: {_short(str(exc))}", True) from None
        except ValueError as exc:  # JSON that does not decode
            raise fail(f"bad response, not valid JSON: {_short(str(exc))}", True) from None
        except Exception as exc:
            # a transport error the client did not translate is still this endpoint's failure
            if isinstance(exc, OSError) or type(exc).__module__.split(".")[0] in _TRANSPORT_MODULES:
                raise fail(f"connection error: {type(exc).__name__}: {_short(str(exc))}", True) from None
            raise
        return _reply_from(response, fail)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self._openai is not None:
            self._openai.close()


def _reply_from(response: Any, fail: Callable[..., EndpointError]) -> Reply:
    """The Reply in a decoded response; raises `fail(...)` for one that holds no answer."""
    if isinstance(response, str):  # the client hands back the raw body of a non-JSON content type
        raise fail("the response is not JSON (wrong content type; does the base URL end in the API "
                   f"path, such as /v1?): {_short(response, 120)!r}", True)
    choices = getattr(response, "choices", None)
    if not isinstance(choices, list) or not choices:
        raise fail("the response has no choices", True)
    message = getattr(choices[0], "message", None)
    if message is None:
        raise fail("the response's choice has no message", True)
    text = message_text(message)
    if text is None:
        # a well-formed reply without an answer: asking again would get the same, and it
        # says nothing about the endpoint's health (not retried, not counted against it)
        raise fail("the reply has no text, refusal or tool call "
                   f"(finish_reason {getattr(choices[0], 'finish_reason', None)!r})", False)
    usage = getattr(response, "usage", None)
    return Reply(
        clean_text(text),
        token_count(getattr(usage, "prompt_tokens", 0)),
        token_count(getattr(usage, "completion_tokens", 0)),
        clean_text(str(getattr(response, "model", "") or "")),
        clean_text(str(getattr(choices[0], "finish_reason", "") or "")),
        _top_logprobs(choices[0]),
    )


def message_text(message: Any) -> str | None:
    """What the model answered: its text; else its refusal, as written (a refusal is an answer
    the test sees); else its tool calls as JSON; None when the message has none of these."""
    content = getattr(message, "content", None)
    if isinstance(content, str):
        return content
    refusal = getattr(message, "refusal", None)
    if isinstance(refusal, str) and refusal:
        return refusal
    functions = [getattr(call, "function", None) for call in getattr(message, "tool_calls", None) or ()]
    functions.append(getattr(message, "function_call", None))  # the older single-call form
    calls = [_function_call(f) for f in functions if f is not None]
    return json.dumps(calls, ensure_ascii=False) if calls else None


def _function_call(function: Any) -> dict[str, str]:
    return {"name": str(getattr(function, "name", "") or ""), "arguments": str(getattr(function, "arguments", "") or "")}


def clean_text(text: str) -> str:
    """Reply text as it is cached and handed to tests: lone surrogates (which no file or
    terminal can encode) become U+FFFD; proper surrogate pairs become their character."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def token_count(value: Any) -> int:
    """A usage number from the reply; 0 for anything that is not a plausible count (a string,
    a negative or non-finite number): usage is reporting, never a reason to lose an answer."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and 0 <= value <= MAX_TOKEN_COUNT else 0


def _top_logprobs(choice: Any) -> tuple[tuple[str, float], ...]:
    """`choices[0].logprobs.content[0].top_logprobs` as (token, logprob) pairs; () when absent."""
    content = getattr(getattr(choice, "logprobs", None), "content", None)
    if not isinstance(content, list) or not content:
        return ()
    pairs: list[tuple[str, float]] = []
    for item in getattr(content[0], "top_logprobs", None) or ():
        token, logprob = getattr(item, "token", None), getattr(item, "logprob", None)
        if (isinstance(token, str) and isinstance(logprob, (int, float)) and not isinstance(logprob, bool)
                and math.isfinite(logprob)):
            pairs.append((clean_text(token), float(logprob)))
    return tuple(pairs)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after") if headers is not None else None
    if value is None:
        return None
    try:
        seconds = float(value)
        return seconds if math.isfinite(seconds) else None  # "nan", "inf": no usable hint
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError, OverflowError):
            return None


def redact(text: str, secret: str) -> str:
    """`text` with the API key replaced by a marker, whatever its length (and any run of its
    first 8 characters, as in "sk-abc123...")."""
    return redaction.redact(text, [secret], API_KEY_MARK)


def _cause_of_type(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first exception of `kind` in the chain of causes of `exc` (bounded: chains can loop)."""
    current: BaseException | None = exc
    for _ in range(20):
        if current is None or isinstance(current, kind):
            return current
        current = current.__cause__ or current.__context__
    return None


def _cause(exc: BaseException) -> str:
    inner = exc.__cause__ or exc.__context__
    return _short(str(inner) if inner else str(exc))


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
