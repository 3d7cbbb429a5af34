"""The exit rule as a pure function: which code, and the reason the terminal's last line gives."""

from __future__ import annotations

from pytest_promptopt.report.exit_rule import Failure, OptimizeState, decide

CASE = Failure("t.py::test_a", ("p.yaml",))


def test_gates_excuse_failed_cases_of_passed_gates_only() -> None:
    assert decide("gates", 1, [CASE], {"p.yaml": False}).code == 0
    assert decide("gates", 1, [CASE], {"p.yaml": True}).reason == "gate failed: p.yaml"
    assert decide("gates", 1, [CASE], {}).code == 1  # no gate: as pytest
    two = Failure("t.py::test_b", ("p.yaml", "q.yaml"))
    assert decide("gates", 1, [two], {"p.yaml": False}).code == 1  # q.yaml has no gate
    assert decide("gates", 1, [two], {"p.yaml": False, "q.yaml": False}).code == 0


def test_what_no_gate_can_speak_for_fails_the_session() -> None:
    gates = {"p.yaml": False}
    assert decide("gates", 1, [Failure("t", ("p.yaml",), unscored="HTTP 500")], gates).code == 1
    assert decide("gates", 1, [Failure("t", outside="an error in setup")], gates).code == 1
    assert decide("gates", 1, [CASE], gates, unrecorded=1).code == 1
    assert decide("gates", 1, [CASE], gates, incomplete="the run stopped early").code == 1
    for status in (2, 3, 4, 5):  # interrupted, internal error, usage error, no tests: kept
        assert decide("gates", status, [CASE], gates).code == status


def test_the_tests_rule_is_pytests() -> None:
    assert decide("tests", 1, [CASE], {"p.yaml": False}).code == 1
    assert decide("tests", 0, [], {"p.yaml": True}).code == 1
    assert decide("tests", 0, [], {"p.yaml": False}).code == 0


def test_an_optimization_that_decided_is_not_failed_by_its_before_cases() -> None:
    decided = OptimizeState(frozenset({"p.yaml"}))
    for rule in ("gates", "tests"):
        decision = decide(rule, 1, [CASE], {"p.yaml": True}, optimize=decided)
        assert decision.code == 0 and "reached its decision" in decision.reason
        assert decide(rule, 1, [CASE], {}, optimize=OptimizeState(problem="the optimization was interrupted")).code == 1
    other = Failure("t.py::test_c", ("q.yaml",))
    assert decide("gates", 1, [CASE, other], {}, optimize=decided).code == 1  # q.yaml was not optimized


def test_a_problem_outside_the_gates_fails_the_session_under_either_rule() -> None:
    for rule in ("gates", "tests"):
        decision = decide(rule, 0, [], {"p.yaml": False}, problems=["baseline not saved to b.json: disk full"])
        assert decision.code == 1 and decision.reason == "baseline not saved to b.json: disk full"
