"""The HTTP transport under the openai client: a deadline for the whole call and a size limit.

httpx's timeout bounds each read, so a server that trickles a few bytes at a time keeps a call
alive for as long as it likes. Here every socket operation of a call (connect, headers, body)
waits at most until the call's deadline, set per thread by `call_limits` around one request.
The reply body is decoded here, with the limit applied to the decoded bytes, so a compressed
bomb is refused after `max_bytes` of output, not after it filled the memory.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
import time
import zlib
from collections.abc import Iterator
from typing import Any

import openai

# The HTTP stack the openai client is built on (httpx, or its successor httpx2 with httpcore2).
_HTTPX_NAME = next(c.__module__ for c in openai.DefaultHttpxClient.__mro__ if c.__module__.startswith("httpx"))
_HTTPX_NAME = _HTTPX_NAME.split(".")[0]
httpx: Any = importlib.import_module(_HTTPX_NAME)
httpcore: Any = importlib.import_module(_HTTPX_NAME.replace("httpx", "httpcore"))

DEFAULT_MAX_REPLY_BYTES = 16 * 1024 * 1024
_ENCODINGS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
_limits = threading.local()


class ReplyRefused(Exception):
    """A reply body that is not read: over the size limit (decoded), or in an encoding not accepted."""


class CallTimedOut(httpcore.ReadTimeout):
    """The call's deadline passed (an httpcore timeout, so the clients report it as a timeout)."""


@contextlib.contextmanager
def call_limits(timeout_s: float, max_bytes: int) -> Iterator[None]:
    """Within the block, this thread's HTTP calls end at `timeout_s` from now and may receive at
    most `max_bytes` of (decoded) body."""
    previous = getattr(_limits, "value", None)
    _limits.value = (time.monotonic() + timeout_s, max_bytes)
    try:
        yield
    finally:
        _limits.value = previous


def _remaining(timeout: float | None) -> float | None:
    """`timeout` cut to what is left of this thread's call; raises once nothing is left."""
    limits = getattr(_limits, "value", None)
    if limits is None:
        return timeout
    left = limits[0] - time.monotonic()
    if left <= 0:
        raise CallTimedOut("the call's deadline passed")
    return left if timeout is None else min(timeout, left)


def _max_bytes() -> int:
    limits = getattr(_limits, "value", None)
    return DEFAULT_MAX_REPLY_BYTES if limits is None else limits[1]


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _remaining(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _remaining(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, _remaining(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None, socket_options: Any = None) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(host, port, _remaining(timeout), local_address, socket_options)
        return _DeadlineStream(stream)

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Any = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.connect_unix_socket(path, _remaining(timeout), socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _LimitedBody(httpx.SyncByteStream):
    """The body decoded (gzip/deflate) and cut off at the size limit."""

    def __init__(self, raw: httpx.SyncByteStream, encoding: str) -> None:
        self._raw = raw
        self._inflater = zlib.decompressobj(_ENCODINGS[encoding]) if encoding else None

    def __iter__(self) -> Iterator[bytes]:
        limit, total = _max_bytes(), 0
        for chunk in self._raw:
            if self._inflater is not None:
                chunk = self._inflater.decompress(chunk, limit - total + 1)
            total += len(chunk)
            if total > limit:
                raise ReplyRefused(f"the reply is over {limit:,} bytes")
            yield chunk

    def close(self) -> None:
        self._raw.close()


class GuardedTransport(httpx.HTTPTransport):
    """httpx's transport with the call deadline on every socket operation and a bounded body."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._pool._network_backend = _DeadlineBackend()  # httpx has no public hook for this

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.headers["Accept-Encoding"] = "gzip, deflate"  # only what _LimitedBody decodes
        response = super().handle_request(request)
        encoding = response.headers.get("Content-Encoding", "").strip().lower()
        if encoding in ("identity",):
            encoding = ""
        if encoding and encoding not in _ENCODINGS:
            response.close()
            raise ReplyRefused(f"the reply uses the content encoding {encoding!r}, which is not accepted")
        headers = [(k, v) for k, v in response.headers.multi_items()
                   if k.lower() not in ("content-encoding", "content-length")]
        return httpx.Response(response.status_code, headers=headers, stream=_LimitedBody(response.stream, encoding),
                              extensions=response.extensions)
