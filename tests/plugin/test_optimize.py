"""`pytest --optimize` round trips against a scripted server whose replies depend on the prompt,
so a better prompt really passes more tests."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from interrupt import hold_after_evals, interrupt_at, spawn_pytest
from wordtask import WORD_PROMPT, WORD_TESTS, WORDS, is_optimizer, reverse_when_told

from pytest_promptopt.testing import ScriptedServer

PROMPT, TEST = WORD_PROMPT, WORD_TESTS


@pytest.fixture
def word_suite(suite: pytest.Pytester) -> pytest.Pytester:
    suite.makefile(".yaml", word=PROMPT)
    suite.makepyfile(test_word=TEST)
    return suite


@pytest.mark.parametrize("strategy", ["auto", "mipro", "gradsum"])
def test_optimize_rewrites_the_prompt_and_the_next_run_passes(
    word_suite: pytest.Pytester, scripted: ScriptedServer, strategy: str
) -> None:
    scripted.responder = reverse_when_told("Reverse the word letter by letter.")
    result = word_suite.runpytest("--optimize", f"--optimize-strategy={strategy}")
    result.assert_outcomes(failed=len(WORDS))  # the baseline run is reported as it was
    result.stdout.fnmatch_lines(["*accepted: validation 0.000 -> 1.000*", "*+*Reverse the word letter by letter.*"])
    text = (word_suite.path / "word.yaml").read_text()
    assert "Reverse the word letter by letter." in text
    assert "# Word task. This comment must survive write-back." in text
    assert "# the instruction" in text
    again = word_suite.runpytest()
    again.assert_outcomes(passed=len(WORDS))


@pytest.mark.parametrize("link", ["hard", "symbolic"])
def test_optimize_keeps_a_linked_prompt_file_linked(word_suite: pytest.Pytester, scripted: ScriptedServer,
                                                    link: str) -> None:
    scripted.responder = reverse_when_told("Reverse the word letter by letter.")
    path = word_suite.path / "word.yaml"
    shared = word_suite.path / "shared" / "word.yaml"
    shared.parent.mkdir()
    os.chmod(path, 0o640)
    if link == "hard":
        os.link(path, shared)
    else:  # the suite's word.yaml points at a shared file
        path.rename(shared)
        path.symlink_to(shared)
    result = word_suite.runpytest("--optimize")
    result.stdout.fnmatch_lines(["*accepted: validation 0.000 -> 1.000*"])
    assert os.path.samefile(path, shared) and path.is_symlink() == (link == "symbolic")
    assert os.stat(shared).st_nlink == (2 if link == "hard" else 1)
    assert "Reverse the word letter by letter." in shared.read_text()
    assert os.stat(shared).st_mode & 0o777 == 0o640
    assert not list(word_suite.path.rglob("*.promptopt-backup"))
    word_suite.runpytest().assert_outcomes(passed=len(WORDS))


def test_dry_run_prints_the_diff_and_writes_nothing(word_suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    scripted.responder = reverse_when_told("Reverse the word letter by letter.")
    before = (word_suite.path / "word.yaml").read_bytes()
    result = word_suite.runpytest("--optimize", "--optimize-dry-run")
    result.stdout.fnmatch_lines(["*would write (dry run)*", "*-    content: Repeat the word.*"])
    assert (word_suite.path / "word.yaml").read_bytes() == before


def test_a_candidate_that_does_not_win_is_not_written(word_suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    scripted.responder = reverse_when_told("Echo the word back exactly.")
    before = (word_suite.path / "word.yaml").read_bytes()
    result = word_suite.runpytest("--optimize", "--optimize-strategy=mipro")
    result.stdout.fnmatch_lines(["*not written:*"])
    assert (word_suite.path / "word.yaml").read_bytes() == before


def test_a_proposal_that_drops_a_placeholder_is_discarded(suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    suite.makefile(".yaml", word=PROMPT.replace("Repeat the word.", "Repeat the {kind}."))
    suite.makepyfile(test_word=TEST.replace("p, word=word", "p, word=word, kind='word'"))
    scripted.responder = reverse_when_told("Reverse the word.")  # loses {kind}
    result = suite.runpytest("--optimize", "--optimize-strategy=mipro")
    result.stdout.re_match_lines([(r".*note: discarded the proposer's proposal for word\.yaml: proposed instruction "
                                   r"changes the placeholders \(dropped: \['kind'\].*")])


def test_mipro_writes_labelled_demos_when_demos_are_what_helps(
    word_suite: pytest.Pytester, scripted: ScriptedServer
) -> None:
    def respond(messages: list[dict[str, str]], body: dict) -> str:
        if is_optimizer(messages):
            return "Be careful."
        shown_examples = any(m["role"] == "assistant" for m in messages)
        user = messages[-1]["content"]
        return user[::-1] if shown_examples else user

    scripted.responder = respond
    result = word_suite.runpytest("--optimize", "--optimize-strategy=mipro")
    result.stdout.fnmatch_lines(["*accepted:*"])
    text = (word_suite.path / "word.yaml").read_text()
    assert "inputs: {word:" in text  # demos written as YAML, from the failed asserts' expected values
    again = word_suite.runpytest()
    again.assert_outcomes(passed=len(WORDS))


def test_prompts_called_by_one_test_are_optimized_together(suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    suite.makefile(".yaml", rewrite="messages:\n  - role: system\n    content: Copy the word.\n  - role: user\n    content: '{word}'\n",
                   answer="messages:\n  - role: system\n    content: Repeat the word.\n  - role: user\n    content: '{word}'\n")
    suite.makepyfile(
        f"""
        import pytest
        from pytest_promptopt import load_prompt
        rewrite, answer = load_prompt("rewrite.yaml"), load_prompt("answer.yaml")

        @pytest.mark.parametrize("word", {WORDS!r})
        def test_pipeline(llm, word):
            assert llm(answer, word=llm(rewrite, word=word)) == word[::-1]
        """
    )
    scripted.responder = reverse_when_told("Reverse the word letter by letter.")
    result = suite.runpytest("--optimize")
    result.stdout.fnmatch_lines(["answer.yaml, rewrite.yaml: strategy auto*", "*accepted:*"])
    assert suite.runpytest().ret == 0


def test_budget_caps_the_calls_and_is_reported(word_suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    scripted.responder = reverse_when_told("Echo the word back exactly.")
    result = word_suite.runpytest("--optimize", "--optimize-strategy=mipro", "--optimize-budget=15")
    result.stdout.fnmatch_lines(["*LM calls * of budget 15 (estimated *"])
    line = next(ln for ln in result.outlines if "of budget 15" in ln)
    assert int(line.split("LM calls ")[1].split()[0]) <= 15


def test_optimize_with_xdist_is_a_usage_error(word_suite: pytest.Pytester) -> None:
    result = word_suite.runpytest("--optimize", "-n", "2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--optimize runs in one process*"])


def test_resume_continues_an_interrupted_run_from_its_log(word_suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    scripted.responder = reverse_when_told("Echo the word back exactly.")
    # once two evaluations are logged the server holds the run's next request: SIGINT lands mid-search
    gate = hold_after_evals(scripted, word_suite.path, 2)
    process = spawn_pytest(word_suite.path, "--optimize", "--optimize-strategy=mipro")
    interrupt_at(gate, process, signal.SIGINT)
    runs = word_suite.path / ".promptopt_cache" / "runs"
    (log,) = list(runs.glob("*.jsonl"))
    evals_before = log.read_text().count('"event": "eval"')
    assert '"event": "decision"' not in log.read_text()

    calls_before = scripted.count
    result = word_suite.runpytest("--optimize", "--optimize-strategy=mipro", "--optimize-resume")
    result.stdout.fnmatch_lines(["*not written:*"])
    assert list(runs.glob("*.jsonl")) == [log]  # the same log, continued
    events = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    starts = [e for e in events if e["event"] == "start"]
    assert [s["resumed"] for s in starts] == [False, True]
    assert events[-1]["event"] == "decision"
    # the evaluations finished before the interruption were replayed from the log, not re-run:
    replayed = {e["candidate"] for e in events[: evals_before + 1] if e["event"] == "eval"}
    rerun = [e for e in events[evals_before + 1:] if e["event"] == "eval" and e["candidate"] in replayed]
    assert all(not set(r["nodeid"] for r in e["results"]) & _ids(events[:evals_before + 1], e["candidate"])
               for e in rerun)
    assert scripted.count > calls_before  # the baseline run and the rest of the search still ran


def _ids(events: list[dict], candidate: str) -> set[str]:
    return {r["nodeid"] for e in events if e["event"] == "eval" and e["candidate"] == candidate for r in e["results"]}


def test_run_log_records_candidates_scores_and_proposals(word_suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    scripted.responder = reverse_when_told("Reverse the word letter by letter.")
    word_suite.runpytest("--optimize", "--optimize-strategy=auto")
    (log,) = list((word_suite.path / ".promptopt_cache" / "runs").glob("*.jsonl"))
    kinds = {json.loads(line)["event"] for line in log.read_text().splitlines()}
    assert {"start", "eval", "proposal", "trial", "critique", "gradient", "decision"} <= kinds
    assert Path(log).stat().st_size > 0


@pytest.mark.parametrize(("preset", "summaries"), [("light", 0), ("medium", 2)])
def test_the_light_preset_asks_for_no_data_or_program_summary(
    word_suite: pytest.Pytester, scripted: ScriptedServer, preset: str, summaries: int
) -> None:
    asked: list[str] = []
    told = reverse_when_told()

    def respond(messages: list[dict[str, str]], body: dict) -> str:
        if is_optimizer(messages):
            asked.append(messages[-1]["content"])
        return told(messages, body)

    scripted.responder = respond
    result = word_suite.runpytest("--optimize", "--optimize-strategy=mipro", f"--optimize-preset={preset}")
    result.stdout.fnmatch_lines(["*accepted: validation 0.000 -> 1.000*"])
    summary_requests = [a for a in asked if a.startswith(("Here are example inputs", "This test code checks"))]
    assert len(summary_requests) == summaries
    proposals = [a for a in asked if "Write a better instruction." in a]
    assert proposals and all(("TASK (from the tests):" in p) == bool(summaries) for p in proposals)
