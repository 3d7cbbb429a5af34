"""Interrupting a real `pytest --optimize` process at a point the run itself signals.

The pattern (tests/README.md says why): hold the scripted server's requests once the run log
shows what must be finished, wait until a request is held (the run is now blocked on it and
cannot reach its decision), send the signal, then release the held requests so the process can
wind down and exit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from pytest_promptopt.testing import Gate, ScriptedServer


def spawn_pytest(path: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    """`python -m pytest -p no:cacheprovider -q ARGS` in `path`, output piped, interruptible by SIGINT."""
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args]
    with _sigint_not_ignored():
        return subprocess.Popen(command, cwd=path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **env})


@contextlib.contextmanager
def _sigint_not_ignored() -> Iterator[None]:
    """A suite started in the background by a non-interactive shell (`pytest &` in a CI script,
    nohup) has SIGINT ignored, and a child inherits an ignored signal: its Python then installs no
    KeyboardInterrupt handler and a test's SIGINT does nothing. A handled signal is reset to the
    default at exec, so while the child is started SIGINT is handled here."""
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_log_events(path: Path, event: str) -> int:
    """How many `event` lines the run log of the pytester dir `path` holds (0 before it exists)."""
    runs = path / ".promptopt_cache" / "runs"
    logs = sorted(runs.glob("*.jsonl")) if runs.exists() else []
    return sum(log.read_text(encoding="utf-8").count(f'"event": "{event}"') for log in logs)


def hold_after_evals(server: ScriptedServer, path: Path, evals: int) -> Gate:
    """Hold every request the run sends once its log holds `evals` finished evaluations."""
    return server.hold(when=lambda body: run_log_events(path, "eval") >= evals)


def interrupt_at(gate: Gate, process: subprocess.Popen[str], signum: int, timeout: float = 120.0) -> str:
    """Signal `process` while the run waits at `gate`, then let it wind down; returns its output."""
    deadline = time.monotonic() + timeout
    while not gate.wait_held(0.2):  # the short wait only notices a run that ended before the gate
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            output, _ = process.communicate()
            raise AssertionError(f"the run never reached the scripted server's gate; its output:\n{output}")
    process.send_signal(signum)  # queued before any held request is answered
    gate.release()  # the interrupted run's worker threads get their replies and the process exits
    output, _ = process.communicate(timeout=timeout)
    return output
