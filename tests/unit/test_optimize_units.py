"""Unit tests of the optimizer's pure pieces: split, demo bootstrapping, recombination, memo."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest

from pytest_promptopt.llm.client import Budget
from pytest_promptopt.errors import BudgetExhausted
from pytest_promptopt.optimize.base import (
    Candidate,
    Case,
    Evaluation,
    OptimizationContext,
    fingerprint,
)
from pytest_promptopt.optimize.demos import DemoOption, demo_pool, demo_sets, recombine
from pytest_promptopt.optimize.gradsum import apply_proposal
from pytest_promptopt.optimize.loop import MemoProgram, assign_splits, split_of
from pytest_promptopt.optimize.proposer import Proposal, as_guidance, clean_instruction
from pytest_promptopt.optimize.runlog import RunLog
from pytest_promptopt.prompts.prompt import load_prompt
from pytest_promptopt.run.record import Call, CaseOutcome
from pytest_promptopt.usage import Usage

KEY = "/p/intent.yaml"


def case(nodeid: str, text: str, output: str, passed: bool, expected: str | None = None) -> CaseOutcome:
    call = Call(KEY, {"text": text, "labels": "a, b, c"}, output, expected)
    return CaseOutcome(nodeid, passed, 1.0 if passed else 0.0, "" if passed else "assert ...", (call,))


def test_split_is_deterministic_and_roughly_proportional() -> None:
    ids = [f"test_x.py::test[{i}]" for i in range(400)]
    assert [split_of(i) for i in ids] == [split_of(i) for i in ids]
    share = Counter(split_of(i) for i in ids)["validation"] / len(ids)
    assert 0.25 < share < 0.45


def test_split_never_leaves_a_side_empty() -> None:
    for n in range(2, 6):
        ids = [f"t::case{i}" for i in range(n)]
        assert set(assign_splits(ids).values()) == {"train", "validation"}


def test_demo_pool_uses_passing_outputs_and_labels_and_drops_constant_variables() -> None:
    cases = [case("t1", "where is my card", "card_arrival", True),
             case("t2", "lost my card", "The card is lost", False, expected="lost_card"),
             case("t3", "pin?", "???", False)]  # no label: not a demo
    pool = demo_pool(KEY, cases)
    assert [(o.demo.inputs, o.demo.output, o.kind) for o in pool] == [
        ({"text": "where is my card"}, "card_arrival", "bootstrapped"),
        ({"text": "lost my card"}, "lost_card", "labelled"),
    ]


def test_demo_sets_are_stratified_by_answer_when_answers_repeat() -> None:
    cases = [case(f"t{i}", f"msg {i}", "ab"[i % 2], True) for i in range(12)]
    sets = demo_sets(demo_pool(KEY, cases), 4, random.Random(0))
    assert sets
    for s in sets:
        counts = Counter(o.demo.output for o in s)
        assert set(counts) == {"a", "b"} and len(set(counts.values())) == 1


def test_demo_sets_leave_most_cases_unseen_when_answers_are_unique() -> None:
    cases = [case(f"t{i}", f"word{i}", f"drow{i}", True) for i in range(12)]
    for s in demo_sets(demo_pool(KEY, cases), 4, random.Random(0)):
        assert 1 <= len(s) <= 4


def test_recombine_prefers_demos_from_the_best_sets() -> None:
    cases = [case(f"t{i}", f"msg {i}", "ab"[i % 2], True) for i in range(8)]
    pool = {o.source: o for o in demo_pool(KEY, cases)}
    good = (pool["t0"], pool["t1"])
    scored = [(good, 0.9), ((pool["t2"], pool["t3"]), 0.2), ((pool["t0"], pool["t5"]), 0.6),
              ((pool["t4"], pool["t1"]), 0.6), ((pool["t6"], pool["t7"]), 0.1)]
    first = recombine(scored, 3, random.Random(0))[0]
    assert {o.source for o in first} == {"t0", "t1"}


def test_clean_instruction_and_guidance() -> None:
    assert clean_instruction('Instruction: "Reply with {labels} only."') == "Reply with {labels} only."
    assert clean_instruction("```\nBe brief.\n```") == "Be brief."
    assert "{" not in as_guidance("Use {labels}. Then {x.__class__}! More. And more.")


class CountingProgram:
    def __init__(self) -> None:
        self.runs: list[tuple[str, tuple[str, ...]]] = []

    def evaluate(self, candidate: Candidate, nodeids: Sequence[str]) -> Evaluation:
        self.runs.append((fingerprint(candidate), tuple(nodeids)))
        return Evaluation(tuple(CaseOutcome(n, True, 1.0, "", usage={KEY: Usage(requests=2)}) for n in nodeids))


def test_memo_runs_each_case_once_and_a_resumed_run_pays_replays_once(tmp_path: Path) -> None:
    prompt_file = tmp_path / "p.txt"
    prompt_file.write_text("Say {x}")
    prompt = load_prompt(prompt_file)
    original = {prompt.key: prompt}
    candidate = {prompt.key: prompt.with_instruction("Shout {x}")}
    log = RunLog(tmp_path / "runs", "k", resume=False)
    inner = CountingProgram()
    memo = MemoProgram(inner, Budget(100), log, original, [])
    memo.evaluate(candidate, ["a", "b"])
    memo.evaluate(candidate, ["a", "b", "c"])
    assert inner.runs == [(fingerprint(candidate), ("a", "b")), (fingerprint(candidate), ("c",))]
    log.close()

    resumed_log = RunLog(tmp_path / "runs", "k", resume=True)
    budget = Budget(100)
    fresh = CountingProgram()
    resumed = MemoProgram(fresh, budget, resumed_log, original, [])
    resumed.evaluate(candidate, ["a", "b", "c"])
    assert fresh.runs == []  # all replayed from the log
    assert budget.requests == 6  # 3 cases x 2 requests, paid once
    resumed.evaluate(candidate, ["a", "b", "c"])
    assert budget.requests == 6
    with pytest.raises(BudgetExhausted):
        MemoProgram(CountingProgram(), Budget(3), RunLog(tmp_path / "runs", "k", resume=True), original,
                    []).evaluate(candidate, ["a", "b", "c"])


class ScoringProgram(CountingProgram):
    """Passes exactly the cases in `passing`."""

    def __init__(self, passing: set[str]) -> None:
        super().__init__()
        self.passing = passing

    def evaluate(self, candidate: Candidate, nodeids: Sequence[str]) -> Evaluation:
        return Evaluation(tuple(CaseOutcome(n, n in self.passing, float(n in self.passing), "") for n in nodeids))


def test_best_train_counts_a_candidate_scored_on_exactly_the_scoring_cases(tmp_path: Path) -> None:
    """The progress line's best is the search's rule: a mean over the scoring cases from an
    evaluation of exactly them. A retrieval ranking on every train case (a superset) holds the
    scoring cases' results too, but its candidate may have lost the ranking: it does not count."""
    prompt_file = tmp_path / "p.txt"
    prompt_file.write_text("Say {x}")
    prompt = load_prompt(prompt_file)
    original = {prompt.key: prompt}
    first_run = [CaseOutcome(n, False, 0.0, "") for n in ("s1", "s2", "d1")]
    memo = MemoProgram(ScoringProgram({"s1", "s2"}), Budget(100), RunLog(tmp_path / "runs", "k", resume=False),
                       original, first_run)
    memo.track_best(["s1", "s2"], original)
    assert memo.best_train == 0.0
    ranked = {prompt.key: prompt.with_instruction("Shout {x}")}
    memo.evaluate(ranked, ["s1", "s2", "d1"])  # every train case: scoring part 1.0, but not scored in full
    assert memo.best_train == 0.0
    memo.evaluate(ranked, ["s2", "s1"])  # scored in full (from the memo: no new call)
    assert memo.best_train == 1.0


def test_mipro_plan_shrinks_to_fit_a_small_budget_and_keeps_its_shape_otherwise() -> None:
    from pytest_promptopt.optimize.mipro import auto

    plan = auto()
    full = plan.estimate_calls(71, 1)
    assert plan.fitted(full, 71, 1) is plan
    assert plan.fitted(None, 71, 1) is plan
    small = plan.fitted(300, 33, 1)
    assert small is not plan
    assert small.estimate_calls(33, 1) <= 1.2 * 300 < plan.estimate_calls(33, 1)
    assert small.n_demo_sets < plan.n_demo_sets and small.max_trials < plan.max_trials
    assert small.use_critique and small.name == "auto"
    assert plan.estimate_calls(33, 1, 300) == small.estimate_calls(33, 1) < plan.estimate_calls(33, 1)


def test_a_discarded_proposal_names_the_prompt_file_of_its_group(tmp_path: Path) -> None:
    # Two prompts optimized together: the note must say which one the bad proposal was for.
    first, second = tmp_path / "classify.yaml", tmp_path / "explain.yaml"
    first.write_text("messages:\n  - role: system\n    content: 'Pick one of {labels}.'\n"
                     "  - role: user\n    content: '{text}'\n")
    second.write_text("messages:\n  - role: system\n    content: 'Explain {label}.'\n"
                      "  - role: user\n    content: '{text}'\n")
    prompts = [load_prompt(first), load_prompt(second)]
    original = {p.key: p for p in prompts}
    events: list[tuple[str, dict[str, object]]] = []
    ctx = OptimizationContext(original, [], CountingProgram(), None, lambda event, **f: events.append((event, f)),
                              lambda message: None, 0, lambda: None)
    notes: list[str] = []
    bad = Proposal("Explain it.", "rewrite", "editor")  # drops {label}
    assert apply_proposal(original, prompts[1].key, prompts[1], bad, ctx, notes) is None
    why = "proposed instruction changes the placeholders (dropped: ['label'], added: none)"
    assert notes == [f"discarded the editor's proposal for {second}: {why}"]
    assert events == [("discarded", {"prompt": str(second), "reason": why, "text": "Explain it."})]
    good = Proposal("Explain {label} briefly.", "rewrite", "editor")
    candidate = apply_proposal(original, prompts[1].key, prompts[1], good, ctx, notes)
    assert candidate is not None and candidate[prompts[0].key] is prompts[0]
    assert candidate[prompts[1].key].instruction == "Explain {label} briefly."
    assert len(notes) == 1


class RetrievalFavouringProgram:
    """Retrieval candidates fail the first quarter of `hard` cases and pass everything else;
    static demo sets pass half the cases. On full train retrieval is the best choice; on the
    first quarter of the shuffled cases (the halving's first share) it is the worst."""

    def __init__(self, hard: set[str]) -> None:
        self.hard = hard
        self.cases: dict[str, set[str]] = {}

    def evaluate(self, candidate: Candidate, nodeids: Sequence[str]) -> Evaluation:
        retrieving = any(p.retrieval is not None for p in candidate.values())
        self.cases.setdefault("retrieval" if retrieving else fingerprint(candidate), set()).update(nodeids)

        def passed(n: str) -> bool:
            return n not in self.hard if retrieving else int(n.rsplit("-", 1)[1]) % 2 == 0

        return Evaluation(tuple(CaseOutcome(n, passed(n), float(passed(n)), "") for n in nodeids))

    def inputs(self, nodeid: str) -> tuple[dict[str, str], ...]:
        return ({"text": nodeid, "labels": "a, b"},)


def test_retrieval_options_are_scored_on_every_train_case_not_dropped_by_the_first_share(tmp_path: Path) -> None:
    from pytest_promptopt.optimize.demos import Retrieve
    from pytest_promptopt.optimize.mipro import Mipro
    from pytest_promptopt.optimize.search import Evaluator
    from pytest_promptopt.prompts.prompt import Demo

    path = tmp_path / "intent.yaml"
    path.write_text("messages:\n  - role: system\n    content: 'Pick one of {labels}.'\n  - role: user\n    content: '{text}'\n")
    prompt = load_prompt(path)
    ids = [f"t::case-{i}" for i in range(40)]
    shuffled = list(ids)
    random.Random(0).shuffle(shuffled)
    program = RetrievalFavouringProgram(set(shuffled[:10]))
    train = [Case(n, "train", False, 0.0) for n in ids]
    ctx = OptimizationContext({prompt.key: prompt}, train, program, None, lambda event, **f: None,
                              lambda message: None, 0, lambda: None)
    pool = tuple(Demo({"text": f"example {i}"}, "a") for i in range(5))
    statics = [(DemoOption(Demo({"text": f"static {i}"}, "b"), f"s::{i}", "labelled"),) for i in range(8)]
    sets = [None, *statics, Retrieve(pool, 2)]
    kept = Mipro(keep_demo_sets=2, recombine_generations=0, reorder_sets=0).screen(
        ctx, Evaluator(ctx), prompt.key, sets, random.Random(0))
    assert program.cases["retrieval"] == set(ids)  # scored on all 40, 30 of them passing
    assert isinstance(kept[1], Retrieve)  # and ranked first after screening


class OneStrongSetProgram(RetrievalFavouringProgram):
    """As above, except that the static set showing "static 0" passes every case."""

    def evaluate(self, candidate: Candidate, nodeids: Sequence[str]) -> Evaluation:
        strong = any(d.inputs.get("text") == "static 0" for p in candidate.values() for d in p.demos)
        if not strong:
            return super().evaluate(candidate, nodeids)
        self.cases.setdefault("strong", set()).update(nodeids)
        return Evaluation(tuple(CaseOutcome(n, True, 1.0, "") for n in nodeids))


def test_a_static_set_that_cannot_reach_the_best_retrieval_is_not_scored_further(tmp_path: Path) -> None:
    from pytest_promptopt.optimize.demos import Retrieve
    from pytest_promptopt.optimize.mipro import Mipro
    from pytest_promptopt.optimize.search import Evaluator
    from pytest_promptopt.prompts.prompt import Demo

    path = tmp_path / "intent.yaml"
    path.write_text("messages:\n  - role: system\n    content: 'Pick one of {labels}.'\n  - role: user\n    content: '{text}'\n")
    prompt = load_prompt(path)
    ids = [f"t::case-{i}" for i in range(80)]
    program = OneStrongSetProgram(set(ids[:8]))  # retrieval passes 72 of 80: the bar is 0.9
    ctx = OptimizationContext({prompt.key: prompt}, [Case(n, "train", False, 0.0) for n in ids], program, None,
                              lambda event, **f: None, lambda message: None, 0, lambda: None)
    pool = tuple(Demo({"text": f"example {i}"}, "a") for i in range(5))
    statics = [(DemoOption(Demo({"text": f"static {i}"}, "b"), f"s::{i}", "labelled"),) for i in range(4)]
    kept = Mipro(keep_demo_sets=3, recombine_generations=0, reorder_sets=0).screen(
        ctx, Evaluator(ctx), prompt.key, [None, *statics, Retrieve(pool, 2)], random.Random(0))
    weak = [cases for name, cases in program.cases.items() if name not in ("retrieval", "strong")]
    assert len(weak) == 3 and all(len(cases) <= 40 for cases in weak)  # half the cases at most: dropped
    assert program.cases["strong"] == set(ids)  # a set that can reach the bar is scored in full
    assert kept == [None, statics[0], Retrieve(pool, 2)]


def test_a_capped_evaluator_scores_every_candidate_on_the_same_seeded_cases(tmp_path: Path) -> None:
    from pytest_promptopt.optimize.search import Evaluator

    path = tmp_path / "intent.yaml"
    path.write_text("messages:\n  - role: system\n    content: 'Pick one of {labels}.'\n  - role: user\n    content: '{text}'\n")
    prompt = load_prompt(path)
    ids = [f"t::case-{i}" for i in range(40)]
    train = [Case(n, "train", False, 0.0) for n in ids]
    chosen = []
    for seed in (0, 0, 1):
        program = RetrievalFavouringProgram(set())
        told: list[list[str]] = []
        ctx = OptimizationContext({prompt.key: prompt}, train, program, None, lambda event, **f: None,
                                  lambda message: None, seed, lambda: None, scoring_on=lambda ids: told.append(list(ids)))
        evaluator = Evaluator(ctx, most_cases=10)
        assert told == [evaluator.train_ids]  # the run is told once, for the progress line's best
        other = {prompt.key: prompt.with_instruction("Pick {labels}.")}
        evaluator.full_train(other)
        evaluator.minibatch(other, 20, random.Random(0))  # a minibatch larger than the cap: the capped cases
        (seen,) = program.cases.values()
        assert len(seen) == 10 and seen <= set(ids)
        chosen.append(seen)
    assert chosen[0] == chosen[1] != chosen[2]  # drawn once per seed


class PoolProgram(RetrievalFavouringProgram):
    """Every train case is a labelled demo with the given answers, in order."""

    def __init__(self, answers: Sequence[str]) -> None:
        super().__init__(set())
        self.answers = answers

    def demo_pool(self, prompt_key: str, nodeids: Sequence[str]) -> list[DemoOption]:
        from pytest_promptopt.prompts.prompt import Demo

        return [DemoOption(Demo({"text": f"case {i}"}, answer), nodeid, "labelled")
                for i, (nodeid, answer) in enumerate(zip(nodeids, self.answers))]


@pytest.mark.parametrize("answers, orders", [
    (["a", "b"] * 5, ["majority_last", "nearest_last"]),  # classification: both orders, at each k
    ([f"answer {i}" for i in range(10)], ["nearest_last"]),  # unique answers: the two orders are one
])
def test_retrieval_orders_are_screened_only_where_they_differ(tmp_path: Path, answers: list[str],
                                                               orders: list[str]) -> None:
    from pytest_promptopt.optimize.demos import Retrieve
    from pytest_promptopt.optimize.mipro import Mipro

    path = tmp_path / "intent.yaml"
    path.write_text("messages:\n  - role: system\n    content: 'Pick one of {labels}.'\n  - role: user\n    content: '{text}'\n")
    prompt = load_prompt(path)
    train = [Case(f"t::case-{i}", "train", False, 0.0) for i in range(10)]
    ctx = OptimizationContext({prompt.key: prompt}, train, PoolProgram(answers), None, lambda event, **f: None,
                              lambda message: None, 0, lambda: None)
    sets = Mipro(n_demo_sets=0, retrieve_ks=(2, 4)).demo_choices(ctx, prompt.key, random.Random(0))
    retrieved = [(s.k, s.order, len(s.pool)) for s in sets if isinstance(s, Retrieve)]
    assert retrieved == [(k, order, 10) for k in (2, 4) for order in orders]


def test_recombined_sets_that_cannot_reach_the_best_retrieval_are_not_scored_in_full(tmp_path: Path) -> None:
    from pytest_promptopt.optimize.demos import Retrieve
    from pytest_promptopt.optimize.mipro import Mipro
    from pytest_promptopt.optimize.search import Evaluator
    from pytest_promptopt.prompts.prompt import Demo

    path = tmp_path / "intent.yaml"
    path.write_text("messages:\n  - role: system\n    content: 'Pick one of {labels}.'\n  - role: user\n    content: '{text}'\n")
    prompt = load_prompt(path)
    ids = [f"t::case-{i}" for i in range(80)]
    program = RetrievalFavouringProgram(set(ids[:8]))  # retrieval: 72 of 80; every static set: half
    ctx = OptimizationContext({prompt.key: prompt}, [Case(n, "train", False, 0.0) for n in ids], program, None,
                              lambda event, **f: None, lambda message: None, 0, lambda: None)
    pool = tuple(Demo({"text": f"example {i}"}, "a") for i in range(5))
    statics = [tuple(DemoOption(Demo({"text": f"static {i}.{j}"}, "b"), f"s::{i}.{j}", "labelled") for j in range(3))
               for i in range(4)]
    Mipro(keep_demo_sets=2, recombine_generations=2, recombined_sets=2, reorder_sets=0).screen(
        ctx, Evaluator(ctx), prompt.key, [None, *statics, Retrieve(pool, 2)], random.Random(0))
    static_runs = {name: cases for name, cases in program.cases.items() if name != "retrieval"}
    assert len(static_runs) > len(statics)  # recombined sets were built and scored
    assert all(len(cases) <= 40 for cases in static_runs.values())  # none in full: they cannot reach 0.9
