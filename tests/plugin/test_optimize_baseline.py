"""Round trips of `--optimize` with a saved baseline: the baseline is the "before" of the summary,
it is never rewritten unless asked, and when asked it records the prompt as written."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from example import Example
from wordtask import WORD_PROMPT, WORD_TESTS, WORDS, is_optimizer

from pytest_promptopt.optimize.loop import assign_splits
from pytest_promptopt.testing import ScriptedServer

SOME = WORDS[:3]  # the words the baseline's prompt got right
NODEIDS = [f"test_word.py::test_word[{w}]" for w in WORDS]


def respond(messages: list[dict[str, str]], body: dict[str, Any]) -> str:
    """Reverses under "Reverse"; under "Some." only the words in SOME; else echoes."""
    if is_optimizer(messages):
        return "Reverse the word letter by letter."
    system, word = messages[0]["content"], messages[-1]["content"]
    if "Reverse" in system or (system == "Some." and word in SOME):
        return word[::-1]
    return word


@pytest.fixture
def word_suite(suite: pytest.Pytester, scripted: ScriptedServer) -> pytest.Pytester:
    """A baseline saved from a prompt that passed 3 of 12, then the prompt as the run starts it (0 of 12)."""
    scripted.responder = respond
    suite.makepyfile(test_word=WORD_TESTS)
    suite.makefile(".yaml", word=WORD_PROMPT.replace("Repeat the word.", "Some."))
    suite.runpytest("--promptopt-save-baseline=base.json").assert_outcomes(passed=3, failed=9)
    suite.makefile(".yaml", word=WORD_PROMPT)
    return suite


def _split_line() -> str:
    splits = assign_splits(NODEIDS)
    parts = []
    for split in ("train", "validation"):
        ids = [n for n in NODEIDS if splits[n] == split]
        then = sum(1 for n in ids if n.split("[")[1].rstrip("]") in SOME) / len(ids)
        parts.append(f"{split} {then:.3f} -> 1.000 ({len(ids)} of {len(ids)} case(s) in the baseline)")
    return "  baseline -> candidate: " + ", ".join(parts) + "; the decision compares with this run's scores above*"


def test_the_baseline_is_the_before_and_is_left_as_it_was(word_suite: pytest.Pytester) -> None:
    base = word_suite.path / "base.json"
    before = base.read_bytes()
    result = Example(word_suite).run_pytest("--optimize", "--optimize-strategy=mipro", "--promptopt-baseline=base.json",
                                            "--promptopt-report=r.json", "--promptopt-html=r.html")
    result.stdout.fnmatch_lines([
        "*promptopt: optimization*",
        "  validation score 0.000 -> 1.000; *",  # this run: what the decision compares with
        f"  before, from baseline {base}: word.yaml passed 3 of 12 case(s) (pass rate 0.250, mean score 0.250); "
        "the prompt file changed since",
        _split_line(),
        "  accepted: validation 0.000 -> 1.000*",
    ])
    assert "Reverse the word letter by letter." in (word_suite.path / "word.yaml").read_text()
    assert base.read_bytes() == before  # no save flag: the baseline file is never rewritten
    assert "baseline saved" not in result.stdout.str()
    (group,) = result.report["optimization"]["groups"]
    (shown,) = group["baseline_before"]
    assert shown["prompt"] == "word.yaml" and shown["passed"] == 3 and shown["cases"] == 12
    assert shown["pass_rate"] == 0.25 and shown["prompt_changed"] is True
    assert {s["split"]: s["in_baseline"] for s in shown["splits"]} == {"train": group["train"]["cases"],
                                                                      "validation": group["validation"]["cases"]}
    assert "before, from baseline" in (word_suite.path / "r.html").read_text(encoding="utf-8")


def test_without_a_baseline_nothing_is_said_about_one(word_suite: pytest.Pytester) -> None:
    result = Example(word_suite).run_pytest("--optimize", "--optimize-strategy=mipro", "--promptopt-report=r.json")
    result.stdout.fnmatch_lines(["  accepted: validation 0.000 -> 1.000*"])
    assert "from baseline" not in result.stdout.str()
    (group,) = result.report["optimization"]["groups"]
    assert group["baseline_before"] == []


def test_the_saved_baseline_records_the_prompt_as_written(word_suite: pytest.Pytester) -> None:
    new = word_suite.path / "new.json"
    result = word_suite.runpytest("--optimize", "--optimize-strategy=mipro", "--promptopt-baseline=base.json",
                                  "--promptopt-save-baseline=new.json")
    result.assert_outcomes(failed=12)  # the run above is reported as it ran
    result.stdout.fnmatch_lines([f"baseline saved to {new}: 12 case(s) of 1 prompt(s); word.yaml as written by the "
                                 "optimization (12 case(s) re-scored by its re-runs of the written prompt)"])
    saved = json.loads(new.read_text())["prompts"]["word.yaml"]
    written = (word_suite.path / "word.yaml").read_bytes()
    assert b"Reverse the word letter by letter." in written
    assert saved["digest"] == hashlib.sha256(written).hexdigest()
    assert {n: (c["verdict"], c["output"]) for n, c in saved["cases"].items()} == {
        n: ("passed", w[::-1]) for n, w in zip(NODEIDS, WORDS)}
    # the next plain run of the written prompt matches it case for case, with the same file digest
    again = word_suite.runpytest("--promptopt-baseline=new.json")
    again.assert_outcomes(passed=12)
    again.stdout.fnmatch_lines(["word.yaml: pass rate 100.0% * of 12 now vs 100.0% * of 12 in the baseline; "
                                "0 now failing, 0 now passing, 0 new, 0 gone (12 paired)"])
    assert "the prompt file changed" not in again.stdout.str()


def test_a_dry_run_saves_the_prompt_as_it_is(word_suite: pytest.Pytester) -> None:
    before = (word_suite.path / "word.yaml").read_bytes()
    result = word_suite.runpytest("--optimize", "--optimize-dry-run", "--promptopt-save-baseline=new.json")
    result.stdout.fnmatch_lines(["baseline saved to *new.json: 12 case(s) of 1 prompt(s)", "*would write (dry run)*"])
    saved = json.loads((word_suite.path / "new.json").read_text())["prompts"]["word.yaml"]
    assert (word_suite.path / "word.yaml").read_bytes() == before
    assert saved["digest"] == hashlib.sha256(before).hexdigest()
    assert {c["verdict"] for c in saved["cases"].values()} == {"failed"}
