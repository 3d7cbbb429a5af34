"""Round trips for `judge.pairwise(a, b, criteria)`: both orders asked, disagreement a tie, and
the report's flip rate and first-position rate for a judge of known position bias."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import test_plugin_judge as base

from pytest_promptopt.run.pairwise import PAIR_SYSTEM
from pytest_promptopt.testing import ScriptedServer, biased_pairwise

_clean_env, judge_server, judged = base._clean_env, base.judge_server, base.judged  # fixtures shared with it

PAIRS = 150
P_FIRST = 0.75  # the scripted judge answers 'A' (the output shown first) this often, whatever it is shown

BIASED_TESTS = f"""
import pytest

@pytest.mark.parametrize("i", range({PAIRS}))
def test_pair(judge, i):
    judge.pairwise(f"answer {{i}}: alpha", f"answer {{i}}: beta", "Answers the question better.")
"""


def shown(messages: list[dict[str, str]]) -> tuple[str, str]:
    """The outputs of a pairwise request in the order shown (A, B)."""
    found = re.findall(r"<(OUTPUT-[0-9a-f]+-[AB])>\n(.*?)\n</\1>", messages[-1]["content"], re.DOTALL)
    return found[0][1], found[1][1]


def fair(messages: list[dict[str, str]], body: dict[str, Any]) -> str:
    first, second = shown(messages)
    return "A" if "good" in first else "B" if "good" in second else "tie"


def test_a_fair_judge_decides_and_both_orders_are_asked(judged: pytest.Pytester, judge_server: ScriptedServer) -> None:
    judge_server.responder = fair
    judged.makepyfile(test_pairs="""
def test_pair(judge):
    verdict = judge.pairwise("a bad reply", "a good reply", "is good")
    assert verdict.winner == "b" and not verdict.flipped
    assert judge.pairwise("a good reply", "a bad reply", "is good").winner == "a"
    assert judge.pairwise("a bad reply", "a good reply", "is good", both_orders=False).winner == "b"
""")
    judged.runpytest("--promptopt-report=report.json").assert_outcomes(passed=1)
    orders = [shown(b["messages"]) for b in judge_server.requests]
    assert orders[:2] == [("a bad reply", "a good reply"), ("a good reply", "a bad reply")]  # both orders
    assert len(judge_server.requests) == 2  # the later calls ask the same two orders: each its own cache entry, hit
    report = json.loads((judged.path / "report.json").read_text())
    (row,) = report["judges"]
    assert row["pairwise"]["flips"] == 0 and row["pairwise"]["pairs_both_orders"] == 2 and row["pairwise"]["picks"] == 5


def test_a_biased_judge_reports_the_bias_it_was_given(judged: pytest.Pytester, judge_server: ScriptedServer) -> None:
    judge_server.responder = biased_pairwise(P_FIRST)
    judged.makepyfile(test_pairs=BIASED_TESTS)
    result = judged.runpytest("--promptopt-report=report.json", "--promptopt-html=report.html")
    result.assert_outcomes(passed=PAIRS)
    assert len(judge_server.requests) == 2 * PAIRS  # each pair asked in both orders
    (row,) = json.loads((judged.path / "report.json").read_text())["judges"]
    pairwise = row["pairwise"]
    # each order picks A with P_FIRST, independently: the orders disagree when both pick the same position
    true_flip, true_first = P_FIRST ** 2 + (1 - P_FIRST) ** 2, P_FIRST  # 0.625, 0.75
    for figure, truth in ((pairwise["flip_rate"], true_flip), (pairwise["first_position_rate"], true_first)):
        assert figure["low"] <= truth <= figure["high"], (figure, truth)  # inside the reported Wilson 95% interval
        assert abs(figure["value"] - truth) < 0.08, (figure, truth)  # and close: the stated interval of this test
    assert pairwise["pairs_both_orders"] == PAIRS and pairwise["picks"] == 2 * PAIRS
    out = result.stdout.str()
    assert re.search(r"inline \"Answers the question better.\" pairwise: 150 pairs asked in both orders, "
                     r"flip rate 0\.\d{3} \[0\.\d{3}, 0\.\d{3}\]; first-position rate 0\.\d{3}", out), out
    html = (judged.path / "report.html").read_text()
    assert "first-position rate" in html and f"{pairwise['first_position_rate']['value']:.3f}" in html


def test_a_judge_file_gives_its_criteria_not_its_score_prompt(judged: pytest.Pytester,
                                                              judge_server: ScriptedServer) -> None:
    judge_server.responder = fair
    (judged.path / "polite.yaml").write_text("criteria: is good\nmodel: pair-model\nsystem: Reply with a JSON score only.\n")
    judged.makepyfile(test_pairs="""
from pytest_promptopt import load_judge
polite = load_judge("polite.yaml")

def test_pair(judge):
    assert judge.pairwise("a good reply", "a bad reply", polite).winner == "a"
""")
    judged.runpytest().assert_outcomes(passed=1)
    assert {b["model"] for b in judge_server.requests} == {"pair-model"}
    assert all(b["messages"][0]["content"] == PAIR_SYSTEM for b in judge_server.requests)
    assert all("CRITERIA:\nis good" in b["messages"][1]["content"] for b in judge_server.requests)
