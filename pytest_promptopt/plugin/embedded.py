"""The embedded model's server as the session starts it: on the first call the cache cannot
answer, said on the terminal, and stopped when the session closes (on Ctrl-C too)."""

from __future__ import annotations

import time

import pytest

from ..defaults import EMBEDDED_MODEL
from ..errors import LocalModelError
from ..llm import local
from .progress import write_apart


class EmbeddedModel:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self._server: local.EmbeddedServer | None = None

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

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
