"""The embedded model's server as the session starts it: on the first call the cache cannot
answer, said on the terminal, and stopped when the session closes (on Ctrl-C too).

Under xdist the controller owns the one server all workers share, and still starts it only when
a worker asks for it: a worker that needs the model writes a request file into a folder the
controller passed it, and waits for the controller to write the server's URL (or why it could not
start) next to it. A run whose calls the cache answers never starts the model."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
import threading
import time
from pathlib import Path

import pytest

from ..atomic import write_text_atomic
from ..defaults import EMBEDDED_MODEL
from ..errors import LocalModelError
from ..llm import local
from .progress import write_apart

REQUEST_FILE = "request"
URL_FILE = "url"
ERROR_FILE = "error"
POLL_S = 0.05


class EmbeddedModel:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self._server: local.EmbeddedServer | None = None
        self._broker: WorkerBroker | None = None

    def start(self) -> str:
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        say = (lambda text: write_apart(tr, text)) if tr is not None else (lambda text: None)
        say(f"promptopt: starting the embedded model ({EMBEDDED_MODEL}, llama.cpp server on 127.0.0.1): "
            "a call was not in the cache")
        started = time.perf_counter()
        try:
            self._server = local.start()
        except LocalModelError as exc:
            pytest.exit(f"pytest-promptopt: {exc}", returncode=pytest.ExitCode.USAGE_ERROR)
        say(f"promptopt: embedded model ready at {self._server.base_url} ({time.perf_counter() - started:.1f} s)")
        return self._server.base_url

    def broker_folder(self, start_url: Callable[[], str]) -> str:
        """The folder workers ask in (controller side); its broker starts on the first call."""
        if self._broker is None:
            self._broker = WorkerBroker(start_url)
        return str(self._broker.folder)

    def stop(self) -> None:
        if self._broker is not None:
            self._broker.close()
        if self._server is not None:
            self._server.stop()


class WorkerBroker:
    """Controller side: watches its folder for a worker's request and answers with the URL."""

    def __init__(self, start_url: Callable[[], str]) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="promptopt-embedded-broker-"))
        self._start_url = start_url
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="promptopt-embedded-broker", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        request = self.folder / REQUEST_FILE
        while not self._closed.is_set():
            if request.exists():
                self._answer()
                return
            self._closed.wait(POLL_S)

    def _answer(self) -> None:
        try:
            url = self._start_url()
        except BaseException as exc:  # pytest.exit raises outside Exception: the worker must hear it
            write_text_atomic(self.folder / ERROR_FILE, str(exc) or type(exc).__name__)
            return
        write_text_atomic(self.folder / URL_FILE, url)

    def close(self) -> None:
        self._closed.set()
        for name in (REQUEST_FILE, URL_FILE, ERROR_FILE):
            (self.folder / name).unlink(missing_ok=True)
        try:
            self.folder.rmdir()
        except OSError:
            pass


def ask_controller(folder: str, timeout_s: float = local.STARTUP_TIMEOUT_S + 30) -> str:
    """Worker side: ask the controller to start the shared server and wait for its URL."""
    where = Path(folder)
    (where / REQUEST_FILE).touch()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (where / URL_FILE).exists():
            return (where / URL_FILE).read_text().strip()
        if (where / ERROR_FILE).exists():
            raise LocalModelError((where / ERROR_FILE).read_text())
        time.sleep(POLL_S)
    raise LocalModelError(f"the xdist controller did not start the embedded model within {timeout_s:.0f} s")
