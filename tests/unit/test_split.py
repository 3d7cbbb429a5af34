"""The train split (issue 27): scoring and demo-source parts, stratified by answer and seeded;
cases the prompt already shows never score; and the one rule that picks the best candidate."""

from __future__ import annotations

from pathlib import Path

from pytest_promptopt.optimize.base import Case, OptimizationContext
from pytest_promptopt.optimize.search import Evaluator
from pytest_promptopt.optimize.split import (
    TrainSplit,
    scoring_size,
    shown_cases,
    split_train,
)
from pytest_promptopt.prompts.demo import Demo
from pytest_promptopt.prompts.prompt import load_prompt


def inputs_of(texts: dict[str, str]):
    return lambda nodeid: ({"text": texts[nodeid], "labels": "a, b"},)


def test_every_repeated_answer_is_on_both_sides_and_cases_without_an_answer_score() -> None:
    ids = [f"t::{i}" for i in range(23)]
    answers = {n: f"label{i // 3}" for i, n in enumerate(ids[:21])}  # 7 answers, 3 cases each
    split = split_train(ids, answers, inputs_of({n: n for n in ids}), (), seed=0)
    assert set(split.scoring) | set(split.demo_source) == set(ids)
    assert not set(split.scoring) & set(split.demo_source)
    for label in set(answers.values()):
        sides = {("scoring" if n in split.scoring else "demo") for n, a in answers.items() if a == label}
        assert sides == {"scoring", "demo"}, label
    assert {"t::21", "t::22"} <= set(split.scoring)  # nothing to show: they can only score
    assert len(split.scoring) >= scoring_size(21)
    assert list(split.scoring) == sorted(split.scoring, key=ids.index)  # in case order


def test_the_split_is_drawn_from_the_seed() -> None:
    ids = [f"t::{i}" for i in range(40)]
    answers = {n: f"label{i % 20}" for i, n in enumerate(ids)}
    inputs = inputs_of({n: n for n in ids})
    first, again, other = (split_train(ids, answers, inputs, (), seed) for seed in (0, 0, 1))
    assert first == again != other


def test_cases_the_prompt_shows_never_score_and_equal_inputs_stay_together() -> None:
    ids = [f"t::{i}" for i in range(8)]
    texts = {n: f"message {i}" for i, n in enumerate(ids)}
    texts["t::7"] = texts["t::6"]  # the same input twice
    inputs = inputs_of(texts)
    shown = shown_cases(ids, [{"text": "message 0"}, {"text": "message 1"}], inputs)
    assert shown == ["t::0", "t::1"]
    split = split_train(ids, {n: "a" if i % 2 else "b" for i, n in enumerate(ids)}, inputs, shown, seed=0)
    assert split.shown == ("t::0", "t::1") and set(split.shown) <= set(split.demo_source)
    assert not set(split.shown) & set(split.scoring)
    assert ("t::6" in split.scoring) == ("t::7" in split.scoring)
    assert "2 of them left out of scoring" in TrainSplit(split.scoring, split.demo_source, split.shown).describe()


class NoProgram:
    def inputs(self, nodeid: str) -> tuple[dict[str, str], ...]:
        return ({"text": nodeid},)


def test_the_best_is_the_highest_score_on_the_scoring_cases_ties_to_fewer_demos(tmp_path: Path) -> None:
    path = tmp_path / "intent.yaml"
    path.write_text("messages:\n  - role: system\n    content: 'Pick one.'\n  - role: user\n    content: '{text}'\n")
    prompt = load_prompt(path)
    train = [Case(f"t::{i}", "train", i < 2, float(i < 2)) for i in range(6)]
    split = TrainSplit(("t::0", "t::1", "t::2"), ("t::3", "t::4", "t::5"))
    ctx = OptimizationContext({prompt.key: prompt}, train, NoProgram(), None, lambda event, **f: None,
                              lambda message: None, 0, lambda: None, split=split)
    evaluator = Evaluator(ctx)
    assert evaluator.train_ids == list(split.scoring)
    assert evaluator.entry(ctx.original).full == 2 / 3  # the original's first run on the scoring cases
    many = {prompt.key: prompt.with_demos(tuple(Demo({"text": f"d{i}"}, "a") for i in range(3)))}
    few = {prompt.key: prompt.with_instruction("Pick one label.").with_demos((Demo({"text": "d"}, "a"),))}
    evaluator.entry(many, "many").full = 1.0
    evaluator.entry(few, "few").full = 1.0
    assert evaluator.best_full().label == "few"
    evaluator.entry(many).full = 1.0 + 1e-9
    assert evaluator.best_full().label == "many"
