"""Which exit code a session ends with, and the one line that says why, pytest-free.

A prompt suite is not a unit-test suite: a good prompt still fails some of its cases, and its
gate (a minimum pass rate, or no significant drop against a baseline) is the verdict CI should
act on. Under the `gates` rule a failed case of a prompt whose gate passed does not fail the
session; everything a gate does not cover (a test that calls no gated prompt, an error outside a
test, a case whose LM call failed, an incomplete run) fails it as in pytest. Under the `tests`
rule any failed test fails the session, as pytest alone decides.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

GATES, TESTS = "gates", "tests"
EXIT_RULES = (GATES, TESTS)
OK, FAILED = 0, 1  # pytest's ExitCode.OK and TESTS_FAILED; the other codes are never changed here
_OTHER_CODES = {2: "the run was interrupted", 3: "an internal error", 4: "a usage error",
                5: "no tests were collected"}


@dataclass(frozen=True)
class Failure:
    """One failed report of the run, as the exit rule needs it."""

    nodeid: str
    prompts: tuple[str, ...] = ()  # the prompts (keys) the failed case counts against
    unscored: str = ""  # the LM call failed (endpoint down, replay miss): the case says nothing
    outside: str = ""  # why no gate can speak for it (an error in setup, a strict XPASS, ...)


@dataclass(frozen=True)
class OptimizeState:
    """An `--optimize` run: the prompts whose optimization reached its decision (written or
    not), and what kept it from deciding (interrupted, budget, errors), if anything."""

    decided: frozenset[str] = frozenset()
    problem: str = ""


@dataclass(frozen=True)
class ExitDecision:
    code: int
    rule: str
    reason: str
    excused: tuple[str, ...] = ()  # node ids of failed tests the gates (or the optimization) spoke for

    def line(self) -> str:
        return f"promptopt: exit {self.code} by the {self.rule} rule: {self.reason}"

    def to_dict(self) -> dict[str, object]:
        return {"rule": self.rule, "code": self.code, "reason": self.reason, "excused": list(self.excused)}


def decide(rule: str, status: int, failures: Sequence[Failure], gates: Mapping[str, bool], *,
           name: Callable[[str], str] = str, incomplete: str = "", unrecorded: int = 0,
           optimize: OptimizeState | None = None, problems: Sequence[str] = ()) -> ExitDecision:
    """`status`: pytest's own exit status; `gates`: prompt key -> whether its gate failed (a
    prompt with no gate is absent); `unrecorded`: failures pytest counted that are not in
    `failures`; `problems`: what else makes the run untrustworthy (say, a baseline asked for and
    not saved). Those fail the session under either rule."""
    if status not in (OK, FAILED):
        return ExitDecision(status, rule, _OTHER_CODES.get(status, f"pytest's exit status {status}"))
    if problems:
        return ExitDecision(FAILED, rule, "; ".join(problems))
    if optimize is not None and optimize.problem:
        return ExitDecision(FAILED, rule, optimize.problem)
    decided = optimize.decided if optimize is not None else frozenset()
    failed_gates = sorted(name(k) for k, failed in gates.items() if failed and k not in decided)
    if incomplete:
        return ExitDecision(FAILED, rule, f"{incomplete}, so the gates did not see every case")
    if rule == TESTS:
        return _by_tests(failures, failed_gates, unrecorded, decided)
    if failed_gates:
        return ExitDecision(FAILED, rule, f"gate failed: {', '.join(failed_gates)}")
    return _by_gates(failures, gates, unrecorded, decided, name)


def _by_tests(failures: Sequence[Failure], failed_gates: list[str], unrecorded: int,
              decided: Collection[str]) -> ExitDecision:
    before = [f for f in failures if _optimized(f, decided)]
    counted = len(failures) - len(before) + unrecorded
    if counted:
        return ExitDecision(FAILED, TESTS, f"{_tests(counted)} failed; any failed test fails the session "
                                           "(--promptopt-exit-rule=gates lets the prompts' gates decide)")
    if failed_gates:
        return ExitDecision(FAILED, TESTS, f"gate failed: {', '.join(failed_gates)}")
    return ExitDecision(OK, TESTS, _optimized_reason(before) or "no test failed")


def _by_gates(failures: Sequence[Failure], gates: Mapping[str, bool], unrecorded: int,
              decided: Collection[str], name: Callable[[str], str]) -> ExitDecision:
    before = [f for f in failures if _optimized(f, decided)]
    rest = [f for f in failures if not _optimized(f, decided)]
    unscored = [f for f in rest if f.unscored]
    if unscored:
        return ExitDecision(FAILED, GATES, f"{_tests(len(unscored))} could not be scored, the LM call failed "
                                           f"(first: {unscored[0].nodeid}: {unscored[0].unscored})")
    outside = [f for f in rest if f.outside or not f.prompts or any(p not in gates for p in f.prompts)]
    if outside or unrecorded:
        first = outside[0] if outside else None
        why = "" if first is None else f" (first: {first.nodeid}: {first.outside or _ungated(first, gates, name)})"
        return ExitDecision(FAILED, GATES, f"{_tests(len(outside) + unrecorded)} failed outside a gate{why}")
    excused = tuple(f.nodeid for f in rest)
    reasons = []
    if rest:
        prompts = sorted({name(p) for f in rest for p in f.prompts})
        one = len(rest) == 1 and len(prompts) == 1
        belong = "belongs to a prompt whose gate" if one else "belong to prompts whose gates"
        reasons.append(f"{len(rest)} failed test{'s' if len(rest) != 1 else ''} {belong} passed ({', '.join(prompts)})")
    if before:
        reasons.append(_optimized_reason(before))
    quiet = "no test failed" + (" and every gate passed" if gates else "")
    return ExitDecision(OK, GATES, "; ".join(reasons) or quiet,
                        excused + tuple(f.nodeid for f in before))


def _optimized(failure: Failure, decided: Collection[str]) -> bool:
    """A failed case from before the optimization of every prompt it counts against."""
    return bool(decided) and bool(failure.prompts) and not failure.outside and all(p in decided for p in failure.prompts)


def _optimized_reason(before: Sequence[Failure]) -> str:
    if not before:
        return ""
    return (f"the optimization reached its decision; {_tests(len(before))} failed before it, "
            "as the optimization's \"before\"")


def _ungated(failure: Failure, gates: Mapping[str, bool], name: Callable[[str], str]) -> str:
    if not failure.prompts:
        return "it calls no prompt"
    missing = [name(p) for p in failure.prompts if p not in gates]
    return f"{', '.join(missing)} has no gate (set min_pass_rate, or compare with a baseline)"


def _tests(n: int) -> str:
    return f"{n} test{'s' if n != 1 else ''}"
