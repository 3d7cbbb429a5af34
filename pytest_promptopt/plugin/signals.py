"""SIGTERM as Ctrl-C for an `--optimize` run: a CI cancel or `kill` then ends the session the
way Ctrl-C does (the run log is closed, a half-made temporary file is removed, the embedded
server is stopped and nothing is written back)."""

from __future__ import annotations

import signal
import threading
from typing import Any


class SigtermAsInterrupt:
    """Installed only from the main thread, and only when nobody else handles SIGTERM."""

    def __init__(self) -> None:
        self._previous: Any = None

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return
        self._previous = signal.SIG_DFL
        signal.signal(signal.SIGTERM, _raise_interrupt)

    def restore(self) -> None:
        if self._previous is not None and threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGTERM) is _raise_interrupt:
                signal.signal(signal.SIGTERM, self._previous)
            self._previous = None


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"terminated by signal {signal.Signals(signum).name}")
