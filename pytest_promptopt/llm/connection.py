"""The one factory of HTTP clients to an endpoint (chat, embeddings, any later call), and the
translation of whatever a call raises into an `EndpointError` with no secret in it.

Every client is built here on the guarded transport (a deadline for the whole call, a cap on
the decoded reply), with the openai client's own retries off (retries are the caller's: they
need Retry-After, the budget and the accounting). Every call runs under `call_limits`, and every
error names the endpoint by its display URL, with the key and the URL's credentials and query
values taken out of the text, whatever the server echoed back.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, TypeVar

from .endpoint import Endpoint
from .redaction import display_url
from .replies import short
from ..errors import EndpointError

if TYPE_CHECKING:
    import openai  # imported on first use: it costs ~1 s, paid by every pytest run (and xdist worker)

T = TypeVar("T")
RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
MAX_REPLY_BYTES = 16 * 1024 * 1024  # a reply is text or numbers: anything larger is refused, not buffered
_TRANSPORT_MODULES = frozenset({"httpx", "httpx2", "httpcore", "httpcore2", "h11", "anyio", "ssl"})


def http_client(endpoint: Endpoint, timeout: float) -> openai.OpenAI:
    """An openai client of `endpoint` on the guarded transport, without retries of its own."""
    import openai

    from .transport import GuardedTransport

    return openai.OpenAI(
        base_url=endpoint.base_url,
        api_key=endpoint.api_key or "not-needed",
        timeout=timeout,
        max_retries=0,  # retries are ours: Retry-After, budget and accounting
        http_client=openai.DefaultHttpxClient(transport=GuardedTransport()),
    )


class Connection:
    """One endpoint's HTTP client, built on first use by `http_client`. `call` runs one request
    under the call limits and fails only with an EndpointError (see `error`)."""

    def __init__(self, endpoint: Endpoint, *, timeout: float, max_reply_bytes: int = MAX_REPLY_BYTES,
                 resolve_base_url: Callable[[], str] | None = None, kind: str = "LM call", hint: str = "") -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.max_reply_bytes = max_reply_bytes
        self._resolve_base_url = resolve_base_url  # lazy endpoint: the embedded server starts on first miss
        self._kind = kind  # how messages name a call: "LM call", "embedding call"
        self._hint = hint  # what to do about a failure, appended to every message
        self._lock = threading.Lock()
        self._openai: openai.OpenAI | None = None

    def client(self) -> openai.OpenAI:
        with self._lock:
            if self._openai is None:
                if self._resolve_base_url is not None:  # the identity (the cache key) stays the model's
                    self.endpoint = replace(self.endpoint, base_url=self._resolve_base_url())
                self._openai = http_client(self.endpoint, self.timeout)
            return self._openai

    def call(self, send: Callable[[openai.OpenAI], T], model: str) -> T:
        """`send(client)` under the whole-call deadline and the reply-size cap; any failure of
        the endpoint or the transport is raised as an EndpointError."""
        from .transport import call_limits

        client = self.client()
        try:
            with call_limits(self.timeout, self.max_reply_bytes):  # the whole call, headers and body
                return send(client)
        except Exception as exc:
            error = self._translate(exc, model)
            if error is None:
                raise
            raise error from None

    def error(self, what: str, retryable: bool, retry_after: float | None = None, status: int | None = None,
              *, model: str) -> EndpointError:
        """The error of a failed call: the endpoint named by its display URL, and no secret in
        the text (an error body may quote the key or the URL back: "invalid key sk-...")."""
        what = self.endpoint.redact(what)
        err = EndpointError(f"{self._kind} to {self.endpoint.describe()} failed: {what}{self._hint}",
                            base_url=display_url(self.endpoint.base_url), model=model, retryable=retryable)
        err.retry_after = retry_after  # type: ignore[attr-defined]
        err.status = status  # type: ignore[attr-defined]
        return err

    def _translate(self, exc: Exception, model: str) -> EndpointError | None:
        """The EndpointError for what a call raised; None for an error that is not the endpoint's."""
        import openai

        from .transport import ReplyRefused

        fail = self.error
        if isinstance(exc, ReplyRefused):  # asking again would fetch the same oversized reply
            return fail(f"reply refused: {exc}", False, model=model)
        if isinstance(exc, openai.APITimeoutError):
            return fail(f"no answer within {self.timeout:g} s (timeout), which bounds the whole call: "
                        "connecting, headers and body", True, model=model)
        if isinstance(exc, openai.APIConnectionError):
            refused = _cause_of_type(exc, ReplyRefused)
            if refused is not None:
                return fail(f"reply refused: {refused}", False, model=model)
            return fail(f"connection error: {_cause(exc)}", True, model=model)
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            return fail(f"HTTP {status}: {short(exc.message)}", status in RETRYABLE_STATUS,
                        retry_after(exc.response.headers), status, model=model)
        if isinstance(exc, openai.APIError):  # malformed body and the like
            return fail(f"bad response: {short(str(exc))}", True, model=model)
        if isinstance(exc, ValueError):  # JSON that does not decode
            return fail(f"bad response, not valid JSON: {short(str(exc))}", True, model=model)
        # a transport error the client did not translate is still this endpoint's failure
        if isinstance(exc, OSError) or type(exc).__module__.split(".")[0] in _TRANSPORT_MODULES:
            return fail(f"connection error: {type(exc).__name__}: {short(str(exc))}", True, model=model)
        return None

    def close(self) -> None:
        if self._openai is not None:
            self._openai.close()


def retry_after(headers: Mapping[str, str]) -> float | None:
    """The seconds a Retry-After header asks for (a number or an HTTP date); None without one."""
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
    return short(str(inner) if inner else str(exc))
