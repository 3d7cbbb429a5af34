"""A scripted OpenAI-compatible HTTP server on 127.0.0.1, for tests and benchmarks.

It answers `POST /v1/chat/completions` with whatever a responder function returns for the
request's messages (optionally with top logprobs), `POST /v1/embeddings` with the vectors an
embedder function returns (by default hashed word counts), and can inject faults (status codes, Retry-After, hangs, cut bodies,
malformed JSON, empty choices, wrong content type) so the real `openai` client and our retry
path are exercised end to end.

A test that interrupts or races a run holds a request at a gate instead of guessing how long the
run takes: `gate = server.hold(when=...)` makes every chat request for which `when(body)` is true
wait; `gate.wait_held()` returns once the first one is waiting (the run is now blocked on it and
cannot finish); the test interrupts, then `gate.release()` lets the held requests be answered.
`stop()` releases every gate, so a forgotten one never hangs a test.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Messages = list[dict[str, str]]
# A responder returns the reply text, or {"content": text, "top_logprobs": [(token, logprob), ...]}
# to also send an OpenAI-shaped `logprobs` object (the alternatives for the first token), or
# {"message": {...}} and/or {"usage": {...}} to send those objects as given (refusals, tool
# calls, hostile usage numbers).
Responder = Callable[[Messages, dict[str, Any]], "str | dict[str, Any]"]
# An embedder returns one vector per input text.
ServerEmbedder = Callable[[list[str]], list[list[float]]]


@dataclass(frozen=True)
class Fault:
    """One injected failure. `kind` is one of: status, hang, cut, malformed, empty, content_type."""

    kind: str = "status"
    status: int = 500
    retry_after: str | None = None
    seconds: float = 0.0  # for "hang"; for "trickle", the pause between pieces
    body: bytes = b""  # for "raw", the body; for "trickle", the whole HTTP response, sent 4 bytes at a time
    headers: tuple[tuple[str, str], ...] = ()  # for "raw"


class Gate:
    """Chat requests the server holds until the test releases them (see `ScriptedServer.hold`)."""

    def __init__(self, when: Callable[[dict[str, Any]], bool]) -> None:
        self.when = when
        self._reached = threading.Event()
        self._open = threading.Event()

    def pass_through(self, body: dict[str, Any]) -> None:
        """Called by the server for each chat request: blocks while this gate holds it."""
        if self._open.is_set() or not self.when(body):
            return
        self._reached.set()
        self._open.wait()

    def wait_held(self, timeout: float | None = None) -> bool:
        """Wait until a request is held (the client is now blocked on it); False if none came
        within `timeout` seconds."""
        return self._reached.wait(timeout)

    def release(self) -> None:
        """Answer the held requests and every later one, as if the gate had never been there."""
        self._open.set()


class _Server(ThreadingHTTPServer):
    # socketserver's default listen backlog of 5 overflows when more clients connect at once,
    # and the kernel's SYN retry then stalls those requests by a second.
    request_queue_size = 128


def echo_last_user(messages: Messages, body: dict[str, Any]) -> str:
    return next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")


def biased_pairwise(p_first: float, seed: int = 0) -> Responder:
    """A pairwise judge with a known position bias: it answers 'A' (the output shown first) with
    probability `p_first` and 'B' otherwise, whatever the outputs say. Deterministic per request:
    the draw is a digest of the request's messages and `seed`, so a rerun answers the same."""

    def answer(messages: Messages, body: dict[str, Any]) -> str:
        text = json.dumps(messages, sort_keys=True) + f"|{seed}"
        draw = int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:12], 16) / 16**12
        return "A" if draw < p_first else "B"

    return answer


def hashed_words(texts: list[str], dimensions: int = 64) -> list[list[float]]:
    """Deterministic toy embeddings: word counts hashed into `dimensions` buckets."""
    vectors = []
    for text in texts:
        vector = [0.0] * dimensions
        for word in re.findall(r"\w+", text.casefold()):
            vector[zlib.crc32(word.encode()) % dimensions] += 1.0
        vectors.append(vector)
    return vectors


def _split_answer(answer: str | dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """A responder's answer as (text, the choice's `logprobs` object or None)."""
    if isinstance(answer, str):
        return answer, None
    text = str(answer.get("content", ""))
    top = [(str(token), float(logprob)) for token, logprob in answer.get("top_logprobs", ())]
    if not top:
        return text, None
    chosen = next((lp for token, lp in top if token == text), top[0][1])
    entry = {"token": text, "logprob": chosen, "bytes": None,
             "top_logprobs": [{"token": t, "logprob": lp, "bytes": None} for t, lp in top]}
    return text, {"content": [entry], "refusal": None}


class ScriptedServer:
    def __init__(self, responder: Responder = echo_last_user, *, delay: float = 0.0,
                 embedder: ServerEmbedder = hashed_words) -> None:
        self.responder = responder
        self.embedder = embedder
        self.embedding_requests: list[dict[str, Any]] = []
        self.delay = delay
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._faults: deque[Fault] = deque()
        self._embedding_faults: deque[Fault] = deque()
        self._fault_rate: tuple[float, Fault] | None = None
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._calls = 0
        self._gates: list[Gate] = []

    # -- control ---------------------------------------------------------------------------
    def fail_next(self, fault: Fault, times: int = 1) -> None:
        with self._lock:
            self._faults.extend([fault] * times)

    def fail_next_embedding(self, fault: Fault, times: int = 1) -> None:
        """Inject `fault` on the next `times` embeddings requests (chat faults are apart)."""
        with self._lock:
            self._embedding_faults.extend([fault] * times)

    def fail_every(self, every: int, fault: Fault) -> None:
        """Inject `fault` on every `every`-th request (deterministic error rate)."""
        with self._lock:
            self._fault_rate = (float(every), fault)

    def hold(self, when: Callable[[dict[str, Any]], bool] = lambda body: True) -> Gate:
        """From now on, hold every chat request whose body `when` accepts until the returned
        gate is released (embedding requests are never held). `when` runs on the server's
        request thread, before the request is answered: e.g. "the run log has two evals"."""
        gate = Gate(when)
        with self._lock:
            self._gates.append(gate)
        return gate

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def _next_fault(self) -> Fault | None:
        with self._lock:
            self._calls += 1
            if self._faults:
                return self._faults.popleft()
            if self._fault_rate and self._calls % int(self._fault_rate[0]) == 0:
                return self._fault_rate[1]
            return None

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> ScriptedServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out at once: no 40 ms stalls

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def handle(self) -> None:
                try:
                    super().handle()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test); nothing to answer

            def _send(self, status: int, payload: bytes, content_type: str = "application/json",
                      extra: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, json.dumps({"object": "list", "data": [{"id": "scripted", "object": "model"}]}).encode())
                else:
                    self._send(404, b'{"error": {"message": "not found"}}')

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path.rstrip("/").endswith("/embeddings"):
                    server._embeddings(self, body)
                    return
                server._chat(self, body)

        self._httpd = _Server(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        # a short poll interval: stop() waits up to one interval for the serving loop to notice
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="scripted-llm", daemon=True)
        self._thread.start()
        return self

    def _chat(self, handler: Any, body: dict[str, Any]) -> None:
        """`POST /v1/chat/completions`: recorded, delayed, faulted or answered by the responder."""
        with self._lock:
            self.requests.append(body)
            self.headers.append({k.lower(): v for k, v in handler.headers.items()})
            gates = list(self._gates)
        for gate in gates:
            gate.pass_through(body)
        fault = self._next_fault()
        if self.delay:
            time.sleep(self.delay)
        if fault is not None and self._inject(handler, fault):
            return
        try:
            answer = self.responder(body.get("messages", []), body)
            text, logprobs = _split_answer(answer)
            given = answer if isinstance(answer, dict) else {}
        except Exception as exc:  # noqa: BLE001 - a responder bug is a 500, visibly
            handler._send(500, json.dumps({"error": {"message": f"responder failed: {exc}"}}).encode())
            return
        prompt_tokens = sum(len(m.get("content", "").split()) for m in body.get("messages", []))
        payload = {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "scripted"),
            "choices": [{"index": 0, "finish_reason": given.get("finish_reason", "stop"),
                         "message": given.get("message", {"role": "assistant", "content": text}),
                         "logprobs": logprobs}],
            "usage": given.get("usage", {"prompt_tokens": prompt_tokens, "completion_tokens": len(text.split()),
                                         "total_tokens": prompt_tokens + len(text.split())}),
        }
        handler._send(200, json.dumps(payload).encode())

    def _embeddings(self, handler: Any, body: dict[str, Any]) -> None:
        """`POST /v1/embeddings`: kept apart from chat requests, so `requests` counts chat calls only."""
        with self._lock:
            self.embedding_requests.append(body)
            fault = self._embedding_faults.popleft() if self._embedding_faults else None
        if fault is not None and self._inject(handler, fault):
            return
        texts = body.get("input", [])
        texts = [texts] if isinstance(texts, str) else list(texts)
        try:
            vectors = self.embedder(texts)
        except Exception as exc:  # noqa: BLE001 - an embedder bug is a 500, visibly
            handler._send(500, json.dumps({"error": {"message": f"embedder failed: {exc}"}}).encode())
            return
        payload = {"object": "list", "model": body.get("model", "scripted"),
                   "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
                   "usage": {"prompt_tokens": sum(len(t.split()) for t in texts),
                             "total_tokens": sum(len(t.split()) for t in texts)}}
        handler._send(200, json.dumps(payload).encode())

    def _inject(self, handler: Any, fault: Fault) -> bool:
        """Send the fault; return True if the request is fully answered."""
        if fault.kind == "status":
            extra = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
            body = json.dumps({"error": {"message": f"injected {fault.status}", "type": "injected"}}).encode()
            handler._send(fault.status, body, extra=extra)
            return True
        if fault.kind == "hang":
            time.sleep(fault.seconds)
            return False
        if fault.kind == "cut":
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", "4096")
            handler.end_headers()
            handler.wfile.write(b'{"id": "chatcmpl-cut", "choices": [{"ind')
            handler.wfile.flush()
            handler.close_connection = True
            return True
        if fault.kind == "malformed":
            handler._send(200, b'{"id": "x", "choices": [ this is not json')
            return True
        if fault.kind == "empty":
            handler._send(200, json.dumps({"id": "x", "object": "chat.completion", "created": 0,
                                           "model": "scripted", "choices": []}).encode())
            return True
        if fault.kind == "raw":
            handler.send_response(fault.status)
            for k, v in (("Content-Length", str(len(fault.body))), *fault.headers):
                handler.send_header(k, v)
            handler.end_headers()
            handler.wfile.write(fault.body)
            return True
        if fault.kind == "trickle":  # a whole HTTP response (status line, headers, body) 4 bytes at a time
            handler.close_connection = True
            for start in range(0, len(fault.body), 4):
                handler.wfile.write(fault.body[start:start + 4])
                handler.wfile.flush()
                time.sleep(fault.seconds)
            return True
        if fault.kind == "content_type":
            handler._send(200, b"<html><body>gateway says hello</body></html>", content_type="text/html")
            return True
        raise ValueError(f"unknown fault kind {fault.kind!r}")

    def stop(self) -> None:
        with self._lock:
            gates = list(self._gates)
        for gate in gates:  # a held request must not outlive the test that forgot to release it
            gate.release()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
