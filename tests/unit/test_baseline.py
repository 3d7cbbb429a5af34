"""Baseline files and the comparison with them, on plain data (no pytest run)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from pytest_promptopt.run.baseline import (
    BASELINE_VERSION,
    Baseline,
    BaselineCase,
    BaselineError,
    PromptCases,
    dumps,
    load,
    missing_message,
    save,
    snapshot,
)
from pytest_promptopt.run.config import BaselineSettings
from pytest_promptopt.report.gate import WrittenGroup, finish, save_after_write_back
from pytest_promptopt.prompts.writeback import PendingWrite
from pytest_promptopt.report.compare import GONE, NEW, NOW_FAILING, NOW_PASSING, STILL_FAILING, STILL_PASSING, compare, summary_lines
from pytest_promptopt.run.record import JUDGE_KEY, Call, CaseOutcome
from pytest_promptopt.usage import Usage

ROOT = Path("/repo")
KEY = str(ROOT / "prompts" / "intent.yaml")


def outcome(nodeid: str, passed: bool, output: str, *, score: float | None = None, judged: bool = False,
            message: str = "", key: str = KEY) -> CaseOutcome:
    usage = {key: Usage(requests=1, prompt_tokens=3)}
    if judged:
        usage[JUDGE_KEY] = Usage(requests=1, prompt_tokens=5)
    calls = (Call(key, {}, "first try", None, ({"role": "user", "content": "q"},)),
             Call(key, {}, output, None, ({"role": "user", "content": "q"},)))
    value = (1.0 if passed else 0.0) if score is None else score
    verdicts = ({"score": value, "threshold": 0.5, "reason": "", "criteria": ""},) if judged else ()
    return CaseOutcome(nodeid, passed, value, message, calls, usage, verdicts=verdicts, digests={key: "d1"})


def cases(*rows: tuple[str, bool]) -> Baseline:
    return Baseline({"p.yaml": PromptCases("p.yaml", "d", {n: BaselineCase(n, ok, float(ok), n.upper())
                                                             for n, ok in rows})})


# -- the file ------------------------------------------------------------------------------------

def test_snapshot_groups_cases_by_prompt_relative_to_the_rootdir() -> None:
    base = snapshot([outcome("t.py::b", False, "nope", message="assert 'nope' == 'yes'"), outcome("t.py::a", True, "yes")],
                    ROOT)
    (prompt,) = base.prompts.values()
    assert prompt.prompt == "prompts/intent.yaml" and prompt.digest == "d1"
    assert prompt.cases["t.py::a"] == BaselineCase("t.py::a", True, 1.0, "yes", False, "")
    assert prompt.cases["t.py::b"].output == "nope"  # the last call's output
    assert prompt.cases["t.py::b"].message == "assert 'nope' == 'yes'"


def test_saved_baseline_is_sorted_versioned_json_without_run_noise(tmp_path: Path) -> None:
    first = snapshot([outcome("t.py::b", False, "nope", message="at 0x7f..."), outcome("t.py::a", True, "ja ✓")], ROOT)
    second = snapshot([outcome("t.py::a", True, "ja ✓"), outcome("t.py::b", False, "nope", message="at 0x8e...")], ROOT)
    assert dumps(first) == dumps(second)  # order of the run and failure messages do not matter
    path = tmp_path / "sub" / "baseline.json"
    save(first, path)
    text = path.read_text(encoding="utf-8")
    assert text == dumps(first) and text.endswith("}\n")
    assert "ja ✓" in text  # readable in a diff, not \u-escaped
    data = json.loads(text)
    assert data["version"] == BASELINE_VERSION and data["format"] == "pytest-promptopt baseline"
    assert list(data["prompts"]["prompts/intent.yaml"]["cases"]) == ["t.py::a", "t.py::b"]
    assert data["prompts"]["prompts/intent.yaml"]["cases"]["t.py::b"] == {
        "verdict": "failed", "score": 0.0, "output": "nope", "judged": False, "checked": False}
    assert text.splitlines()[:3] == ["{", '  "format": "pytest-promptopt baseline",', '  "prompts": {']
    loaded = load(path)
    assert loaded is not None
    assert loaded.prompts["prompts/intent.yaml"].cases["t.py::a"] == BaselineCase("t.py::a", True, 1.0, "ja ✓")
    assert [p.name for p in path.parent.iterdir()] == ["baseline.json"]  # no temporary file left


def test_missing_baseline_is_none_with_a_message_naming_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "nothing.json"
    assert load(path) is None
    message = missing_message(path)
    assert str(path) in message and "not compared" in message and f"--promptopt-save-baseline {path}" in message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "is not valid JSON"),
        ('{"format": "pytest-promptopt baseline", "version": 0, "prompts": {}}',
         "baseline layout version 0 is not the one this pytest-promptopt reads (1)"),
        ('{"format": "pytest-promptopt baseline", "prompts": {}}', "baseline layout version None"),
        ('{"version": 1, "prompts": [], "tests": []}', "is a pytest-promptopt JSON run report (--promptopt-report)"),
        ('[1, 2]', "not a pytest-promptopt baseline"),
        ('{"format": "pytest-promptopt baseline", "version": 1, "prompts": {"p.yaml": {"digest": "d", "cases": '
         '{"t::a": {"verdict": "ok", "score": 1, "output": "x"}}}}}',
         "field prompts['p.yaml'].cases['t::a'].verdict: expected \"passed\" or \"failed\", got 'ok'"),
        ('{"format": "pytest-promptopt baseline", "version": 1, "prompts": {"p.yaml": {"digest": "d", "cases": '
         '{"t::a": {"verdict": "passed", "score": 7, "output": "x"}}}}}', "score: expected a number from 0 to 1, got 7"),
        ('{"format": "pytest-promptopt baseline", "version": 1, "prompts": {"p.yaml": {"cases": {}}}}',
         "field prompts['p.yaml'].digest: expected a string, got nothing"),
        (('{"format": "pytest-promptopt baseline", "version": 1, "prompts": {"p.yaml": {"digest": "d", "cases": '
          '{"t::a": {"verdict": "passed", "score": 1, "output": "x", "checked": "yes"}}}}}'),
         "field prompts['p.yaml'].cases['t::a'].checked: expected true or false, got 'yes'"),
    ],
)
def test_unusable_baseline_names_the_file_the_problem_and_the_fix(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "base.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(BaselineError) as info:
        load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert "fix: " in message and "--promptopt-save-baseline" in message


def test_a_case_scored_by_a_check_is_saved_as_checked_and_a_file_saved_before_the_field_still_loads(
        tmp_path: Path) -> None:
    checked = CaseOutcome("t.py::c", True, 1.0, usage={KEY: Usage(requests=1)}, verdicts=(
        {"score": 1.0, "threshold": 1.0, "reason": "", "criteria": "", "kind": "check"},))
    judged = outcome("t.py::j", True, "yes", judged=True)
    path = tmp_path / "base.json"
    save(snapshot([checked, judged], ROOT), path)
    saved = json.loads(path.read_text(encoding="utf-8"))["prompts"]["prompts/intent.yaml"]["cases"]
    assert {n: (c["checked"], c["judged"]) for n, c in saved.items()} == {"t.py::c": (True, False),
                                                                          "t.py::j": (False, True)}
    loaded = load(path)
    assert loaded is not None and loaded.prompts["prompts/intent.yaml"].cases["t.py::c"].checked
    old = tmp_path / "old.json"  # as written before "checked" existed
    old.write_text('{"format": "pytest-promptopt baseline", "version": 1, "prompts": {"p.yaml": {"digest": "d", '
                   '"cases": {"t::a": {"judged": true, "output": "x", "score": 0.8, "verdict": "passed"}}}}}',
                   encoding="utf-8")
    loaded = load(old)
    assert loaded is not None
    assert loaded.prompts["p.yaml"].cases["t::a"] == BaselineCase("t::a", True, 0.8, "x", True, checked=False)


# -- the comparison ------------------------------------------------------------------------------

def test_case_statuses_and_counts() -> None:
    then = cases(("a", True), ("b", True), ("c", False), ("d", False), ("gone", True))
    now = cases(("a", True), ("b", False), ("c", True), ("d", False), ("fresh", False))
    (p,) = compare(then, now).prompts
    assert {c.nodeid: c.status for c in p.changes} == {
        "a": STILL_PASSING, "b": NOW_FAILING, "c": NOW_PASSING, "d": STILL_FAILING, "gone": GONE, "fresh": NEW}
    assert (p.broken, p.fixed, len(p.paired), p.count(NEW), p.count(GONE)) == (1, 1, 4, 1, 1)
    assert p.rate_then == pytest.approx(3 / 5) and p.rate_now == pytest.approx(2 / 5)
    assert p.p_value == 1.0 and not p.gate_failed
    assert [c.nodeid for c in p.regressions] == ["b"]


def test_a_significant_paired_drop_fails_the_gate() -> None:
    then = cases(*[(f"t{i}", True) for i in range(20)])
    now = cases(*[(f"t{i}", i >= 6) for i in range(20)])  # six of twenty broken, none fixed
    (p,) = compare(then, now).prompts
    assert p.p_value == pytest.approx(0.03125)
    assert p.significant_drop and p.gate_failed
    assert p.gate_reason.startswith("FAIL: McNemar exact p = 0.03125 on 6 now failing vs 0 now passing, < alpha 0.05")
    (strict,) = compare(then, now, alpha=0.01).prompts
    assert not strict.gate_failed and "0.03125" in strict.gate_reason and ">= alpha 0.01" in strict.gate_reason


def test_five_regressions_are_noise_at_alpha_005_unless_a_maximum_drop_is_set() -> None:
    then = cases(*[(f"t{i}", True) for i in range(10)])
    now = cases(*[(f"t{i}", i >= 5) for i in range(10)])
    (p,) = compare(then, now).prompts
    assert p.p_value == pytest.approx(0.0625) and not p.gate_failed
    assert "no maximum drop set" in p.gate_reason
    (capped,) = compare(then, now, max_drop=0.4).prompts
    assert capped.paired_drop == pytest.approx(0.5) and capped.drop_too_large and capped.gate_failed
    assert "paired pass rate fell 50.0%, more than the allowed 40.0%" in capped.gate_reason
    (loose,) = compare(then, now, max_drop=0.5).prompts  # exactly the allowed drop passes
    assert not loose.gate_failed


def test_an_improvement_never_fails_the_gate() -> None:
    then = cases(*[(f"t{i}", False) for i in range(20)])
    now = cases(*[(f"t{i}", True) for i in range(20)])
    (p,) = compare(then, now, max_drop=0.0).prompts
    assert p.p_value < 1e-5 and not p.gate_failed and "(not a drop)" in p.gate_reason


def test_new_and_gone_cases_change_pass_rates_but_not_the_gate() -> None:
    then = cases(("a", True), ("b", True))
    now = cases(("a", True), ("b", True), *[(f"new{i}", False) for i in range(10)])
    (p,) = compare(then, now, max_drop=0.0).prompts
    assert p.rate_now == pytest.approx(2 / 12) and p.paired_drop == 0 and not p.gate_failed
    assert p.interval_now.low == pytest.approx(0.0470, abs=1e-4)  # Wilson 2/12


def test_judge_scores_are_compared_pairwise_with_a_t_interval() -> None:
    def judged(scores: dict[str, float]) -> Baseline:
        return Baseline({"qa.txt": PromptCases("qa.txt", "d", {
            n: BaselineCase(n, s >= 0.5, s, "", judged=True) for n, s in scores.items()})})

    then = judged({"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.6})
    now = judged({"a": 0.7, "b": 0.7, "c": 0.4, "d": 0.6})
    (p,) = compare(then, now).prompts
    change = p.score_change
    assert change.n == 4 and change.mean == pytest.approx(-0.15)
    # differences -0.2 -0.1 -0.3 0: sd 0.1291, t(0.975, 3) = 3.1824
    half = 3.182446 * 0.129099 / 2
    assert change.interval is not None
    assert change.interval.low == pytest.approx(-0.15 - half, abs=1e-4)
    assert change.interval.high == pytest.approx(-0.15 + half, abs=1e-4)
    assert p.score_then.mean == pytest.approx(0.75)


def test_a_changed_prompt_file_is_reported() -> None:
    then = Baseline({"p.yaml": PromptCases("p.yaml", "old", {})})
    now = Baseline({"p.yaml": PromptCases("p.yaml", "new", {})})
    (p,) = compare(then, now).prompts
    assert p.prompt_changed and "no paired cases" in p.gate_reason


def test_terminal_section_lists_regressions_capped_and_shows_control_characters() -> None:
    then = cases(*[(f"t{i:02}", True) for i in range(14)])
    broken = {f"t{i:02}": BaselineCase(f"t{i:02}", False, 0.0, "\x1b[31mred\nline", message="assert 'red' == 'T'")
              for i in range(12)}
    now = Baseline({"p.yaml": PromptCases("p.yaml", "d", {**then.prompts["p.yaml"].cases, **broken})})
    lines = [text for text, _ in summary_lines(compare(then, now), limit=3)]
    assert lines[0].startswith("p.yaml: pass rate 14.3% [4.0%, 39.9%] of 14 now vs 100.0% [78.5%, 100.0%] of 14")
    assert "12 now failing, 0 now passing, 0 new, 0 gone (14 paired)" in lines[0]
    assert lines[1].startswith("  gate FAIL: McNemar exact p = 0.0004883")
    assert lines[2] == "regressed cases (12): passed in the baseline, fail now"
    assert lines[3:7] == ["  t00 (p.yaml)", "    output then: 'T00'", "    output now:  '\\x1b[31mred\\nline'",
                          "    failure now: assert 'red' == 'T'"]
    assert lines[-1].startswith("  ... and 9 more regressed case(s)")
    assert not any("\x1b" in line for line in lines)


def _written_group(tmp_path: Path, outcomes: tuple[CaseOutcome, ...]) -> tuple[WrittenGroup, Path]:
    path = tmp_path / "prompts" / "intent.yaml"
    return WrittenGroup(((str(path), PendingWrite(path, "d1", b"new\n", b"old\n")),), outcomes), path


def test_after_write_back_the_winner_is_saved_only_when_written_and_scored_on_every_case(tmp_path: Path) -> None:
    key = str(tmp_path / "prompts" / "intent.yaml")
    other = str(tmp_path / "prompts" / "other.yaml")
    run = [outcome("t::a", False, "x", key=key), outcome("t::b", False, "y", key=key),
           outcome("t::c", True, "z", key=other)]
    winner = (outcome("t::a", True, "X", key=key), outcome("t::b", True, "Y", key=key))
    settings = BaselineSettings(save_path=tmp_path / "b.json")
    result = finish(settings, None, run, tmp_path, save=False)
    assert result.saved == "" and not (tmp_path / "b.json").exists()

    group, path = _written_group(tmp_path, winner)
    saved = save_after_write_back(result, settings.save_path, run, [group], [path], tmp_path)
    data = json.loads((tmp_path / "b.json").read_text())["prompts"]
    assert {n: c["verdict"] for n, c in data["prompts/intent.yaml"]["cases"].items()} == {"t::a": "passed",
                                                                                         "t::b": "passed"}
    assert data["prompts/intent.yaml"]["digest"] == hashlib.sha256(b"new\n").hexdigest()
    assert data["prompts/other.yaml"] == {"digest": "d1", "cases": {"t::c": {
        "checked": False, "judged": False, "output": "z", "score": 1.0, "verdict": "passed"}}}
    assert saved.saved.endswith("prompts/intent.yaml as written by the optimization (2 case(s) re-scored by its "
                                "re-runs of the written prompt)")

    not_written = save_after_write_back(result, settings.save_path, run, [group], [], tmp_path)
    assert not_written.saved.endswith("prompts/intent.yaml from before write-back (not written)")
    unscored, _ = _written_group(tmp_path, ())
    partial = save_after_write_back(result, settings.save_path, run, [unscored], [path], tmp_path)
    assert "from before write-back (the optimizer did not score the written prompt on every case" in partial.saved
    data = json.loads((tmp_path / "b.json").read_text())["prompts"]["prompts/intent.yaml"]
    assert data["digest"] == "d1" and {c["verdict"] for c in data["cases"].values()} == {"failed"}
    stopped = save_after_write_back(result, settings.save_path, run, [group], [path], tmp_path,
                                    incomplete="the run was interrupted")
    assert stopped.save_failed and "the file is unchanged" in stopped.saved
    assert json.loads((tmp_path / "b.json").read_text())["prompts"]["prompts/intent.yaml"]["digest"] == "d1"
