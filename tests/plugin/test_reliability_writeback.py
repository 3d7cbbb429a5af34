"""Interrupted and concurrent write-back, through real `pytest --optimize` runs.

Signals are real: a subprocess sends SIGINT/SIGTERM to itself from inside the write (a conftest
wraps `os.replace`, the stdlib call that swaps the file in) or is signalled from outside while it
optimizes. The prompt file must then be the old one or the new one, byte for byte; the run log
must parse and `--optimize-resume` must finish the job.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from interrupt import hold_after_evals, interrupt_at, spawn_pytest
from wordtask import WORD_PROMPT, WORD_TESTS, is_optimizer

from pytest_promptopt.prompts.prompt import load_prompt
from pytest_promptopt.testing import ScriptedServer

NEW_INSTRUCTION = "Reverse the word letter by letter."
PROMPT, TEST = WORD_PROMPT, WORD_TESTS

# Lands a signal inside the write-back, deterministically: os.replace is what swaps the new file
# in; the signal is sent just before it (the temporary file is written and synced) or just after.
# A second hook holds every process at the write until PROMPTOPT_BARRIER processes got there.
CONFTEST = """
import os, signal, time
from pathlib import Path
import pytest

AT = os.environ.get("PROMPTOPT_SIGNAL_AT")
SIG = getattr(signal, os.environ.get("PROMPTOPT_SIGNAL", "SIGTERM"))
BARRIER = int(os.environ.get("PROMPTOPT_BARRIER", "0"))


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session):
    if BARRIER:
        here = Path(session.config.rootpath)
        (here / f"at-write-{os.getpid()}").touch()
        deadline = time.monotonic() + 120
        while len(list(here.glob("at-write-*"))) < BARRIER:  # each process signals its arrival by a file
            if time.monotonic() > deadline:
                raise RuntimeError("the other process never reached the write-back barrier")
            time.sleep(0.02)
    if not AT:
        return
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        ours = str(dst).endswith("word.yaml")
        if ours and AT == "before_replace":
            os.kill(os.getpid(), SIG)
        real_replace(src, dst, *args, **kwargs)
        if ours and AT == "after_replace":
            os.kill(os.getpid(), SIG)

    os.replace = replace
"""


FAST = ("--optimize", "--optimize-strategy=gradsum")  # the fewest LM calls; the write is what is tested


def reverse_when_told(messages: list[dict[str, str]], body: dict) -> str:
    if is_optimizer(messages):
        return NEW_INSTRUCTION
    user = messages[-1]["content"]
    return user[::-1] if "Reverse" in messages[0]["content"] else user


@pytest.fixture
def word_suite(suite: pytest.Pytester, scripted: ScriptedServer) -> pytest.Pytester:
    scripted.responder = reverse_when_told
    suite.makefile(".yaml", word=PROMPT)
    suite.makepyfile(test_word=TEST)
    suite.makeconftest(CONFTEST)
    return suite


def assert_log_intact(path: Path) -> list[dict]:
    (log,) = (path / ".promptopt_cache" / "runs").glob("*.jsonl")
    return [json.loads(line) for line in log.read_text().splitlines()]  # every line parses


def temporary_files(path: Path) -> list[str]:
    return [p.name for p in path.iterdir() if p.name.endswith(".tmp")]


def assert_is_the_new_file(path: Path) -> None:
    text = path.read_text()
    assert NEW_INSTRUCTION in text and "# Word task. This comment must survive write-back." in text
    assert load_prompt(path).instruction == NEW_INSTRUCTION


@pytest.mark.parametrize(("signame", "at"), [("SIGINT", "before_replace"), ("SIGTERM", "before_replace"),
                                             ("SIGTERM", "after_replace")])
def test_signal_inside_the_write_leaves_old_or_new_file_and_resume_finishes(
    word_suite: pytest.Pytester, signame: str, at: str
) -> None:
    path = word_suite.path / "word.yaml"
    old = path.read_bytes()
    process = spawn_pytest(word_suite.path, *FAST, PROMPTOPT_SIGNAL=signame, PROMPTOPT_SIGNAL_AT=at)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == pytest.ExitCode.INTERRUPTED, output
    assert "INTERNALERROR" not in output
    assert temporary_files(word_suite.path) == []
    events = assert_log_intact(word_suite.path)
    assert events[-1]["event"] == "decision" and events[-1]["accepted"]
    if at == "before_replace":
        assert path.read_bytes() == old  # byte for byte
        assert "not written: " + str(path) + ": interrupted during the write; the file is unchanged" in output
        resumed = word_suite.runpytest(*FAST, "--optimize-resume")
        resumed.stdout.fnmatch_lines([f"wrote {path}"])
        assert_is_the_new_file(path)
    else:
        assert_is_the_new_file(path)
        assert f"wrote {path} (then interrupted)" in output


def test_sigterm_while_optimizing_writes_nothing_and_resume_continues(
    word_suite: pytest.Pytester, scripted: ScriptedServer
) -> None:
    path = word_suite.path / "word.yaml"
    old = path.read_bytes()
    # once two evaluations are logged the server holds the run's next request: SIGTERM lands mid-search
    gate = hold_after_evals(scripted, word_suite.path, 2)
    process = spawn_pytest(word_suite.path, "--optimize", "--optimize-strategy=mipro")
    output = interrupt_at(gate, process, signal.SIGTERM)
    assert process.returncode == pytest.ExitCode.INTERRUPTED, output
    assert path.read_bytes() == old
    assert temporary_files(word_suite.path) == []
    events = assert_log_intact(word_suite.path)
    assert events[0]["event"] == "start" and not any(e["event"] == "decision" for e in events)
    resumed = word_suite.runpytest("--optimize", "--optimize-strategy=mipro", "--optimize-resume")
    resumed.stdout.fnmatch_lines(["*accepted:*", f"wrote {path}"])
    assert [e["resumed"] for e in assert_log_intact(word_suite.path) if e["event"] == "start"] == [False, True]
    assert_is_the_new_file(path)


def test_two_processes_optimizing_one_file_one_wins_the_other_does_not_overwrite(
    word_suite: pytest.Pytester,
) -> None:
    path = word_suite.path / "word.yaml"
    # both hold at the write until the other got there: both planned against the original file
    processes = [spawn_pytest(word_suite.path, *FAST, PROMPTOPT_BARRIER="2") for _ in range(2)]
    outputs = [p.communicate(timeout=180)[0] for p in processes]
    wrote = [o for o in outputs if f"\nwrote {path}\n" in o]
    refused = [o for o in outputs if f"not written: {path}: the file changed on disk during the run" in o]
    assert len(wrote) == 1 and len(refused) == 1, outputs
    assert "Rerun pytest --optimize on the current file" in refused[0]
    assert_is_the_new_file(path)
    assert temporary_files(word_suite.path) == []


def test_prompt_file_edited_during_the_run_is_not_overwritten(word_suite: pytest.Pytester) -> None:
    path = word_suite.path / "word.yaml"
    word_suite.makeconftest(
        """
        from pathlib import Path
        import pytest

        @pytest.hookimpl(tryfirst=True)
        def pytest_sessionfinish(session):
            # the user saves an edit after the optimizer read the file, before it writes
            path = Path(session.config.rootpath) / "word.yaml"
            path.write_text(path.read_text() + "# edited by hand\\n")
        """
    )
    edited = path.read_text() + "# edited by hand\n"
    result = word_suite.runpytest(*FAST)
    result.stdout.fnmatch_lines(["*accepted:*", f"not written: {path}: the file changed on disk during the run "
                                 "(edited by you or another process); not overwriting it.*"])
    assert path.read_text() == edited


def test_read_only_prompt_file_is_a_clear_error_and_nothing_is_lost(word_suite: pytest.Pytester) -> None:
    path = word_suite.path / "word.yaml"
    old = path.read_bytes()
    os.chmod(path, 0o444)
    try:
        result = word_suite.runpytest(*FAST)
        # the improved prompt is shown as a diff, and the fix is named
        result.stdout.fnmatch_lines([f"*+    content: {NEW_INSTRUCTION}*",
                                     f"not written: {path}: the prompt file is read-only; the improved prompt was "
                                     "not written. Make it writable (chmod u+w) and rerun*"])
        assert path.read_bytes() == old
        assert temporary_files(word_suite.path) == []
    finally:
        os.chmod(path, 0o644)
    # nothing lost: once writable, resuming the run writes the same improvement from its log
    resumed = word_suite.runpytest(*FAST, "--optimize-resume")
    resumed.stdout.fnmatch_lines([f"wrote {path}"])
    assert_is_the_new_file(path)
