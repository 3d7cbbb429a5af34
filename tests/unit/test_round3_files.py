"""Round 3 of the reliability probes (issue 31), the file side, as unit tests of the core: pool
files get the prompt files' guards and are parsed once, baselines are read like every other user
file, non-string demo values are refused. Each docstring starts with the defect it covers
(`../shared/probes/2026-12-07-round3.md`)."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from pytest_promptopt.errors import PromptFileError
from pytest_promptopt.prompts.prompt import load_prompt
from pytest_promptopt.run.baseline import BaselineError, dumps, load, snapshot

PROMPT = "messages:\n  - role: user\n    content: '{text}'\nretrieve: {k: 2, pool: intent.pool.yaml}\n"


def _pool(entries: int) -> str:
    return "".join(f"- inputs:\n    text: 'message {i} about my card'\n  output: label_{i % 50}\n"
                   for i in range(entries))


def _prompt_with_pool(folder: Path, pool: str | None = None) -> Path:
    (folder / "intent.yaml").write_text(PROMPT)
    if pool is not None:
        (folder / "intent.pool.yaml").write_text(pool)
    return folder / "intent.yaml"


def _load_in_thread(path: Path) -> BaseException | None:
    """load_prompt's outcome; fails the test (after unblocking the reader) if it blocks."""
    outcome: list[BaseException | None] = []

    def load_it() -> None:
        try:
            load_prompt(path)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    worker = threading.Thread(target=load_it, daemon=True)
    worker.start()
    worker.join(10)
    if worker.is_alive():
        with open(path.parent / "fifo", "w"):
            pass  # a writer that closes: the blocked read ends
        pytest.fail("load_prompt blocked reading the pool file")
    return outcome[0]


# -- D5: pool files get the prompt files' guards ------------------------------------------------

def test_a_pool_file_that_is_a_fifo_or_a_device_is_refused_not_read(tmp_path: Path) -> None:
    """D5: a pool file that is (a symlink to) a FIFO or /dev/zero is refused, naming the pool
    file, instead of blocking collection or reading until memory runs out."""
    path = _prompt_with_pool(tmp_path)
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "intent.pool.yaml").symlink_to(tmp_path / "fifo")
    error = _load_in_thread(path)
    assert isinstance(error, PromptFileError) and "not a regular file" in str(error)
    assert error.path == tmp_path.resolve() / "intent.pool.yaml"
    if Path("/dev/zero").exists():
        (tmp_path / "intent.pool.yaml").unlink()
        (tmp_path / "intent.pool.yaml").symlink_to("/dev/zero")
        error = _load_in_thread(path)
        assert isinstance(error, PromptFileError) and "not a regular file" in str(error)


def test_an_oversized_pool_file_is_refused_while_read(tmp_path: Path) -> None:
    """D5 (a guard kept, not a defect: the old code refused it too, after reading it whole): the
    pool size limit is reported with the pool file named."""
    path = _prompt_with_pool(tmp_path, "# " + "x" * 10_000_000 + "\n")
    with pytest.raises(PromptFileError, match="limited to 10,000,000") as info:
        load_prompt(path)
    assert info.value.path == tmp_path.resolve() / "intent.pool.yaml"


# -- D9: a pool is parsed once per (path, digest), in one pass ----------------------------------

def test_a_pool_is_parsed_once_per_path_and_digest(tmp_path: Path) -> None:
    """D9: loading the same prompt again (as llm("path") does on every call) reuses the parsed
    pool while the file's bytes are the same, and reads the new pool once they change."""
    path = _prompt_with_pool(tmp_path, _pool(200))
    first, second = load_prompt(path), load_prompt(path)
    assert first.retrieval is not None and second.retrieval is not None
    assert second.retrieval.pool is first.retrieval.pool  # not parsed again
    (tmp_path / "intent.pool.yaml").write_text(_pool(3))
    third = load_prompt(path)
    assert third.retrieval is not None and len(third.retrieval.pool) == 3
    assert third.pool_digest != first.pool_digest


@pytest.mark.skipif(not getattr(yaml, "__with_libyaml__", False), reason="the one-pass parse is libyaml's")
def test_a_large_pool_loads_without_a_round_trip_parse(tmp_path: Path) -> None:
    """D9: a 2,000-entry pool loads with a bounded number of Python calls per entry (one safe
    event pass; the round-trip loader parsed it twice at thousands of calls per entry). Counted
    with a profiler, not timed."""
    path = _prompt_with_pool(tmp_path, _pool(2000))
    calls = 0

    def count(frame: Any, event: str, arg: Any) -> None:
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    sys.setprofile(count)
    try:
        prompt = load_prompt(path)
    finally:
        sys.setprofile(None)
    assert prompt.retrieval is not None and len(prompt.retrieval.pool) == 2000
    assert calls < 500 * 2000, f"{calls:,} Python calls to load 2,000 pool entries"  # was ~14,000,000


# -- D17: non-string pool and demo values are refused ------------------------------------------

@pytest.mark.parametrize("value", ["null", "1.10", "true", "[a, b]", "{a: 1}", "0x1F"])
def test_a_non_string_pool_value_is_refused_with_the_line(tmp_path: Path, value: str) -> None:
    """D17: an output YAML reads as null, a number, a boolean, a list or a mapping is refused
    with the pool file, the line and "quote it", not sent to the model as Python's repr."""
    path = _prompt_with_pool(tmp_path, f"- inputs: {{text: fine}}\n  output: ok\n- inputs: {{text: hi}}\n"
                                       f"  output: {value}\n")
    with pytest.raises(PromptFileError) as info:
        load_prompt(path)
    assert info.value.path == tmp_path.resolve() / "intent.pool.yaml"
    assert info.value.line in (3, 4) and "quote it" in str(info.value)


def test_a_non_string_input_is_refused_in_pool_and_demos(tmp_path: Path) -> None:
    """D17: `text: 0o17` in a pool entry, and `output: true` in a prompt's demos, are refused
    with file, line and "quote it"."""
    path = _prompt_with_pool(tmp_path, "- inputs: {text: 0o17}\n  output: octal\n")
    with pytest.raises(PromptFileError, match="quote it") as info:
        load_prompt(path)
    assert info.value.line == 1
    demos = tmp_path / "demos.yaml"
    demos.write_text("messages:\n  - role: user\n    content: '{text}'\ndemos:\n  - inputs: {text: a}\n"
                     "    output: true\n")
    with pytest.raises(PromptFileError, match="quote it") as info:
        load_prompt(demos)
    assert info.value.path == demos.resolve() and info.value.line == 6


# -- D13, D14: baselines read like every other user file ---------------------------------------

def _good_baseline() -> str:
    return dumps(snapshot([], Path.cwd()))


def test_a_deeply_nested_baseline_is_a_one_line_error(tmp_path: Path) -> None:
    """D13: a baseline nested 100,000 levels deep is a BaselineError of one line naming the file,
    not a RecursionError (INTERNALERROR)."""
    path = tmp_path / "bl.json"
    path.write_text('{"format": "pytest-promptopt baseline", "version": 1, "prompts": '
                    + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(BaselineError) as info:
        load(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value) and "nested" in str(info.value)


def test_a_baseline_with_a_bom_is_read_and_a_wrong_encoding_says_save_it_as_utf8(tmp_path: Path) -> None:
    """D14: a baseline saved as "UTF-8 with BOM" is read; one saved as latin-1 says "save it as
    UTF-8", not "check the path and its permissions"."""
    path = tmp_path / "bl.json"
    text = _good_baseline().replace('"prompts": {}', '"prompts": {"caf\u00e9.yaml": {"digest": "", "cases": {}}}')
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    loaded = load(path)
    assert loaded is not None and list(loaded.prompts) == ["caf\u00e9.yaml"]
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(BaselineError, match="save it as UTF-8") as info:
        load(path)
    assert "permissions" not in str(info.value)


# -- D10, D16: the HTML report -----------------------------------------------------------------

def _html(outcomes: list[Any], then: Any, secrets: tuple[str, ...] = ()) -> str:
    from pytest_promptopt.report.compare import compare
    from pytest_promptopt.report.html import HtmlInput, render
    from pytest_promptopt.run.baseline import Baseline, BaselineCase, PromptCases

    now = Baseline({"p.yaml": PromptCases("p.yaml", "d", {
        o.nodeid: BaselineCase(o.nodeid, o.passed, o.score, o.calls[0].output) for o in outcomes})})
    return render(HtmlInput(tuple(outcomes), Path("/repo"), compare(then or Baseline({}), now), then,
                            "compared with base.json", secrets=secrets))


def _outcome(nodeid: str, passed: bool, output: str) -> Any:
    from pytest_promptopt.run.record import Call, CaseOutcome
    from pytest_promptopt.usage import Usage

    return CaseOutcome(nodeid, passed, float(passed), "" if passed else "assert wrong",
                       (Call("/repo/p.yaml", {}, output, None, ({"role": "user", "content": f"say {output}"},)),),
                       {"/repo/p.yaml": Usage(requests=1, prompt_tokens=4)})


def _all_passed_baseline(nodeids: list[str]) -> Any:
    from pytest_promptopt.run.baseline import Baseline, BaselineCase, PromptCases

    return Baseline({"p.yaml": PromptCases("p.yaml", "d", {n: BaselineCase(n, True, 1.0, "then") for n in nodeids})})


@pytest.mark.parametrize("key", ["none", "default", "x"])
def test_html_redaction_never_rewrites_the_markup(key: str) -> None:
    """D10: a short dummy API key ("none", "default", "x") is redacted from the texts only: the
    CSP keeps `default-src 'none'`, SVG attributes and fills stay as they are."""
    ids = [f"t::c{i}" for i in range(4)]
    page = _html([_outcome(n, i % 2 == 0, f"out {key} {i}") for i, n in enumerate(ids)], _all_passed_baseline(ids),
                 secrets=(key,))
    assert "default-src 'none'" in page
    assert ' x="' in page and 'fill="none"' in page
    assert "[api key]" in page  # the texts that held the key
    assert f"out {key} " not in page


def test_html_redacts_a_key_that_escaping_would_change() -> None:
    """D10: a key holding &, < or a quote is redacted before escaping, so its escaped form never
    appears in the report either."""
    key = 'sk-a&b<c"d-12345678'
    page = _html([_outcome("t::a", False, f"the key is {key}")], None, secrets=(key,))
    import html as html_module

    assert key not in page and html_module.escape(key, quote=True) not in page
    assert "sk-a&amp;b" not in page


def test_html_rendering_is_linear_in_regressed_cases() -> None:
    """D16: rendering 4x the regressed cases runs about 4x the report module's lines (it scanned
    every change once per regressed case: quadratic, 16x). Work counted as lines, not timed."""

    def work(n: int) -> int:
        ids = [f"t::c{i:05d}" for i in range(n)]
        outcomes = [_outcome(nodeid, False, "now") for nodeid in ids]
        baseline = _all_passed_baseline(ids)
        lines = 0

        def in_report(frame: Any, event: str, arg: Any) -> Any:
            nonlocal lines
            if event == "line":
                lines += 1
            return in_report

        def trace(frame: Any, event: str, arg: Any) -> Any:
            return in_report if frame.f_globals.get("__name__") == "pytest_promptopt.report.html" else None

        sys.settrace(trace)
        try:
            _html(outcomes, baseline)
        finally:
            sys.settrace(None)
        return lines

    small, large = work(150), work(600)
    assert large < 6 * small, f"{small:,} report lines run for 150 cases, {large:,} for 600"


# -- D15: a baseline that pairs nothing ---------------------------------------------------------

def test_a_baseline_that_pairs_no_case_fails_the_gate_as_a_mismatch() -> None:
    """D15: a baseline whose node ids (or prompt names) pair no case with the run, a baseline of
    another rootdir or suite, is a mismatch that fails the gate, not a pass."""
    from pytest_promptopt.report.compare import compare, summary_lines
    from pytest_promptopt.run.baseline import Baseline, BaselineCase, PromptCases

    def cases(prefix: str, prompt: str = "p.yaml") -> Baseline:
        return Baseline({prompt: PromptCases(prompt, "d", {f"{prefix}t::{i}": BaselineCase(f"{prefix}t::{i}", True,
                                                                                             1.0, "o")
                                                           for i in range(3)})})

    for then in (cases("x::"), cases("", prompt="other/p.yaml")):
        comparison = compare(then, cases(""), baseline_path="bl.json")
        assert comparison.gate_failed and comparison.to_dict()["gate"] == "failed"
        first, bad = summary_lines(comparison)[0]
        assert bad and "pairs no case" in first and "bl.json" in first
    assert not compare(cases(""), cases("")).gate_failed  # paired and equal: passes
    assert not compare(Baseline({}), cases("")).gate_failed  # an empty baseline: nothing to pair, no mismatch


# -- the run log is read like every other user file --------------------------------------------

def test_a_run_log_that_is_a_fifo_has_no_events_instead_of_blocking(tmp_path: Path) -> None:
    """RUNLOG: a planted run log that is a FIFO is read as no events (the user-file guards), not
    a read that blocks --optimize-resume forever."""
    from pytest_promptopt.optimize.runlog import read_events

    fifo = tmp_path / "k-1.jsonl"
    os.mkfifo(fifo)
    outcome: list[object] = []
    worker = threading.Thread(target=lambda: outcome.append(list(read_events(fifo))), daemon=True)
    worker.start()
    worker.join(10)
    if worker.is_alive():
        with open(fifo, "w"):
            pass
        pytest.fail("read_events blocked reading a FIFO")
    assert outcome == [[]]
