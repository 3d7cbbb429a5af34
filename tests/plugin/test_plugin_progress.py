"""Progress of --optimize: plain lines at least every interval outside a terminal (CI), one line
rewritten in place in a terminal, never glued to the test letters."""

from __future__ import annotations

import io
import itertools
import re
import threading
from collections.abc import Callable

import pytest
from _pytest.terminal import TerminalReporter
from wordtask import WORD_PROMPT, WORD_TESTS, reverse_when_told

from pytest_promptopt.plugin.progress import Progress
from pytest_promptopt.testing import ScriptedServer

LINE = re.compile(r"^\[promptopt\] word\.yaml: .+ \| calls \d+/\d+ \| best train (-|\d\.\d{3}) \| \d+ s \| ETA (-|~\d+ s)$")


class Watched(io.StringIO):
    """The reporter's file: a test waits until the heartbeat thread wrote what it expects, so no
    sleep has to guess how often a loaded machine lets that thread run."""

    def __init__(self) -> None:
        super().__init__()
        self._written = threading.Condition()

    def write(self, text: str) -> int:
        with self._written:
            count = super().write(text)
            self._written.notify_all()
            return count

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 60.0) -> None:
        with self._written:
            assert self._written.wait_for(lambda: predicate(self.getvalue()), timeout), self.getvalue()


class Tty(Watched):
    def isatty(self) -> bool:
        return True


def reporter(pytester: pytest.Pytester, file: io.StringIO) -> TerminalReporter:
    return TerminalReporter(pytester.parseconfig(), file)


def test_outside_a_terminal_a_plain_line_comes_at_least_every_interval(pytester: pytest.Pytester) -> None:
    out = Watched()
    calls = iter(range(0, 10_000, 7))
    with Progress(reporter(pytester, out), lambda: next(calls), "word.yaml", 100, interval=0.05) as progress:
        progress("mipro round 1/2 trial 1/4", estimate=80, best=lambda: 0.25)
        out.wait_for(lambda text: len(text.splitlines()) >= 4)  # a long stage: nothing else is said, the heartbeat speaks
    lines = out.getvalue().splitlines()
    assert len(lines) >= 4, lines
    assert all(LINE.match(line) for line in lines), lines
    assert all("mipro round 1/2 trial 1/4" in line and "best train 0.250" in line for line in lines)
    assert "\r" not in out.getvalue()


def test_in_a_terminal_one_line_is_rewritten(pytester: pytest.Pytester) -> None:
    out = Tty()
    tr = reporter(pytester, out)
    tr.write("....")  # the test letters of the run before
    calls = iter(range(0, 10_000, 3))
    with Progress(tr, lambda: next(calls), "word.yaml", 50, interval=0.05) as progress:
        progress("screening demo sets", estimate=40, best=lambda: None)
        progress("mipro round 1/1 trial 1/2")
        out.wait_for(lambda text: text.count("\r") >= 3)  # the heartbeat rewrote the line
    text = out.getvalue()
    assert text.startswith("....\n\r[promptopt] word.yaml: screening demo sets")  # not glued to the letters
    assert text.count("\r") >= 3 and text.count("\n") == 2 and text.endswith("\n")
    last = text.rstrip("\n").split("\r")[-1].rstrip()
    assert LINE.match(last) and "mipro round 1/1 trial 1/2" in last, last


AHEAD = "[promptopt] sent "  # a first run's calls sent ahead (the probe pass), before the progress lines


def test_optimize_in_ci_prints_progress_lines_apart_from_the_dots(suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    """A pytester run is not a terminal: the plain lines, at least one per interval (set short in
    ini here), each with the stage, calls of budget, best score and ETA."""
    scripted.responder = reverse_when_told("Reverse the word letter by letter.")
    scripted.delay = 0.02
    suite.makefile(".yaml", word=WORD_PROMPT)
    suite.makepyfile(test_word=WORD_TESTS)
    ini = (suite.path / "tox.ini").read_text().rstrip("\n") + "\npromptopt_progress_interval = 0.1\n"
    (suite.path / "tox.ini").write_text(ini)
    result = suite.runpytest("-q", "--optimize", "--optimize-dry-run", "--optimize-strategy=mipro",
                             "--optimize-budget=200")
    progress = [ln for ln in result.outlines if "[promptopt]" in ln and not ln.startswith(AHEAD)]
    assert progress and all(ln.startswith("[promptopt] word.yaml: ") for ln in progress), progress
    assert all(LINE.match(ln) for ln in progress), progress
    assert any(re.search(r"best train 1\.000", ln) for ln in progress[1:]), progress
    stamps = [int(re.search(r"\| (\d+) s \|", ln).group(1)) for ln in progress]  # type: ignore[union-attr]
    assert all(b - a <= 1 for a, b in itertools.pairwise(stamps)), stamps  # never a gap of more than 0.1 s + rounding


def test_heartbeats_are_not_swallowed_by_output_capture(suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    """In a real process pytest captures fd 1 while a test runs, and the optimizer re-runs tests:
    a heartbeat during a slow re-run still reaches the log."""
    scripted.responder = reverse_when_told("Echo the word back exactly.")
    suite.makefile(".yaml", word=WORD_PROMPT)
    # each test takes 0.25 s inside its call phase, where pytest captures fd 1
    suite.makepyfile(test_word=WORD_TESTS.replace("    assert llm(", "    import time; time.sleep(0.25)\n    assert llm("))
    ini = (suite.path / "tox.ini").read_text().rstrip("\n") + "\npromptopt_progress_interval = 0.1\n"
    (suite.path / "tox.ini").write_text(ini)
    result = suite.runpytest_subprocess("-q", "-p", "no:cacheprovider", "--optimize", "--optimize-dry-run",
                                        "--optimize-strategy=mipro", "--optimize-budget=16")
    progress = [ln for ln in result.outlines if "[promptopt]" in ln and not ln.startswith(AHEAD)]
    assert all(ln.startswith("[promptopt] word.yaml: ") and LINE.match(ln) for ln in progress), progress
    assert len(progress) >= 10, progress  # 4 s of slow calls, a line every 0.1 s at least; stage lines alone are few
