"""The judges' report: rows per judge, corrected pass rates, escaped HTML."""

from __future__ import annotations

from pathlib import Path

from pytest_promptopt.report.judges import NO_PROMPT, corrected_rates, html_section, judge_rows, terminal_lines
from pytest_promptopt.run.card import ADVISORY, GATE, JudgeTrust, build_card, trust_of
from pytest_promptopt.run.judge import INLINE_JUDGE
from pytest_promptopt.run.record import CaseOutcome
from pytest_promptopt.usage import Usage

ROOT = Path("/project")
FILE = "/project/judges/j.yaml"


def case(nodeid: str, score: float, judge: str, criteria: str = "c", prompt: str | None = "/project/p.yaml",
         **extra: object) -> CaseOutcome:
    verdict = {"score": score, "threshold": 0.5, "reason": "", "criteria": criteria, "judge": judge, **extra}
    usage = {prompt: Usage(requests=1)} if prompt else {}
    return CaseOutcome(nodeid, score >= 0.5, score, usage=usage, verdicts=(verdict,))


def lookup(key: str) -> JudgeTrust:
    if key == INLINE_JUDGE:
        return trust_of(None, {}, ADVISORY, 0.4)
    truth = [True] * 50 + [False] * 50
    scores = [0.9] * 45 + [0.1] * 5 + [0.9] * 15 + [0.1] * 35  # TPR 0.9, TNR 0.7
    card = build_card("j.yaml", {}, [str(i) for i in range(100)], truth, scores, 0.5)
    return trust_of(card, {}, GATE, 0.4)


def test_rows_per_judge_with_inline_criteria_apart() -> None:
    outcomes = [case("a", 0.9, FILE), case("b", 0.1, FILE), case("c", 0.2, INLINE_JUDGE, "<b>bold</b>"),
                case("d", 0.9, "", "a check")]  # judge "": a deterministic check, not listed
    rows = judge_rows(outcomes, lookup, ROOT)
    assert [(r.name, r.verdicts, r.failed, r.trust.status) for r in rows] == [
        ("judges/j.yaml", 2, 1, "calibrated"), ('inline "<b>bold</b>"', 1, 1, "uncalibrated")]
    page = html_section(rows, [])
    assert "&lt;b&gt;bold&lt;/b&gt;" in page and "<b>" not in page
    text = [line for line, _ in terminal_lines(rows, [])]
    assert text[3].startswith('inline "<b>bold</b>"  uncalibrated  advisory') and not text[3].endswith(" ")


def test_corrected_rates_per_prompt_and_calibrated_judge_only() -> None:
    outcomes = [case(f"t{i}", 0.9 if i < 60 else 0.1, FILE) for i in range(100)]
    outcomes += [case("inline", 0.9, INLINE_JUDGE), case("fixed", 0.9, FILE, prompt=None)]
    outcomes += [CaseOutcome("x", False, 0.1, usage={"/project/p.yaml": Usage(requests=1)}, xfail=True,
                             verdicts=({"score": 0.1, "threshold": 0.5, "judge": FILE},))]
    rates = corrected_rates(outcomes, judge_rows(outcomes, lookup, ROOT), ROOT)
    assert [(r.prompt, r.n, r.observed) for r in rates] == [(NO_PROMPT, 1, 1), ("p.yaml", 100, 60)]
    assert rates[1].corrected.value is not None and abs(rates[1].corrected.value - 0.5) < 1e-9
    assert "corrected for the judge's error 0.500" in rates[1].line()
