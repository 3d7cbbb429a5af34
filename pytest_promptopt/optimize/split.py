"""The train cases split once per run, so every comparison between candidates is fair.

- The *scoring* part: the only train cases candidates are scored on during the search (racing,
  screening, picking the best, simplification), every candidate on the same ones. (Retrieval
  options are first ranked among themselves on every train case, `screening.best_retrieval`:
  fair among them, as below.)
- The *demo-source* part: the only train cases a static demo set may show. No static set can
  therefore show a scoring case, and a set cannot choose the cases it is scored on.
- *Shown*: train cases whose input is one of the prompt file's own static demos. They would pass
  by copying, so they score no candidate (the incumbent included) and join the demo source.

Retrieval draws on every train case, as the written pool will: a call never retrieves an entry
whose inputs equal its own, so a scoring case is never shown its own answer (leave-one-out).

The split is stratified by answer: cases are dealt alternately to scoring and demo source,
grouped by their answer (the output a passing case gave, or the expected answer of a failed one),
so every answer with two or more cases has one on each side; cases with no answer to show go to
scoring. Groups and cases within them are dealt in an order drawn from the run's seed. Cases
with the same inputs stay on one side.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..prompts.prompt import Prompt
from .demos import DemoOption

Inputs = tuple[Mapping[str, str], ...]


class Traced(Protocol):
    """What the split reads of a program: the first run's inputs and demos of each case."""

    def inputs(self, nodeid: str) -> Inputs: ...

    def demo_pool(self, prompt_key: str, nodeids: Sequence[str]) -> list[DemoOption]: ...


@dataclass(frozen=True)
class TrainSplit:
    scoring: tuple[str, ...]
    demo_source: tuple[str, ...]
    shown: tuple[str, ...] = ()  # also in demo_source

    @classmethod
    def everything(cls, ids: Sequence[str]) -> TrainSplit:
        """No split: every case scores and may be shown (a context built outside the loop)."""
        return cls(tuple(ids), tuple(ids))

    def describe(self) -> str:
        shown = (f", {len(self.shown)} of them left out of scoring because the prompt file already shows them as "
                 "demos" if self.shown else "")
        return (f"train split: {len(self.scoring)} cases score every candidate, {len(self.demo_source)} are the "
                f"only source of static demos{shown}; retrieval draws on every train case, never showing a case "
                "its own answer")

    def sizes(self) -> dict[str, int]:
        return {"scoring": len(self.scoring), "demo_source": len(self.demo_source), "shown": len(self.shown)}

    def to_log(self) -> dict[str, Any]:
        return {"scoring": list(self.scoring), "demo_source": list(self.demo_source), "shown": list(self.shown)}


def scoring_size(n_train: int) -> int:
    """About how many of `n_train` cases the split puts in the scoring part (for plans)."""
    return (n_train + 1) // 2


def shown_cases(ids: Iterable[str], demo_inputs: Iterable[Mapping[str, str]],
                inputs: Callable[[str], Inputs]) -> list[str]:
    """The cases of `ids` one of whose calls had a demo's inputs (it would pass by copying)."""
    demo_keys = {frozenset(d.items()) for d in demo_inputs}
    if not demo_keys:
        return []
    return [n for n in ids if any(dk <= frozenset(i.items()) for dk in demo_keys for i in inputs(n))]


def split_train(ids: Sequence[str], answers: Mapping[str, str], inputs: Callable[[str], Inputs],
                shown: Iterable[str], seed: int) -> TrainSplit:
    """Deal `ids` to scoring and demo source (see the module docstring). `answers` holds the
    answer each case could show as a demo; a case without one can only score."""
    shown_set = set(shown)
    units: dict[tuple[Any, ...], list[str]] = defaultdict(list)  # cases with the same inputs, dealt together
    for n in ids:
        units[tuple(tuple(sorted(i.items())) for i in inputs(n))].append(n)
    scoring: list[str] = []
    demo_source: list[str] = []
    groups: dict[str, list[list[str]]] = defaultdict(list)
    for unit in units.values():
        if any(n in shown_set for n in unit):
            demo_source.extend(unit)
        elif all(n not in answers for n in unit):
            scoring.extend(unit)
        else:
            groups[next(answers[n] for n in unit if n in answers)].append(unit)
    rng = random.Random(seed + 3)
    order = sorted(groups)
    rng.shuffle(order)
    to_scoring = True
    for answer in order:
        members = groups[answer]
        rng.shuffle(members)
        for unit in members:
            (scoring if to_scoring else demo_source).extend(unit)
            to_scoring = not to_scoring
    position = {n: i for i, n in enumerate(ids)}
    return TrainSplit(tuple(sorted(scoring, key=position.__getitem__)),
                      tuple(sorted(demo_source, key=position.__getitem__)),
                      tuple(n for n in ids if n in shown_set))


def train_split(program: Traced, original: Mapping[str, Prompt], ids: Sequence[str], seed: int) -> TrainSplit:
    """The split of a group's train cases for a run with `seed`."""
    shown = shown_cases(ids, [d.inputs for p in original.values() for d in p.demos], program.inputs)
    answers = answers_of(program.demo_pool(key, ids) for key in sorted(original))
    return split_train(ids, answers, program.inputs, shown, seed)


def answers_of(pools: Iterable[Sequence[DemoOption]]) -> dict[str, str]:
    """Each case's answer: the outputs its demos give, over every prompt of the group."""
    outputs: dict[str, list[str]] = defaultdict(list)
    for pool in pools:
        for option in pool:
            outputs[option.source].append(option.demo.output.strip().casefold())
    return {n: "\x1f".join(o) for n, o in outputs.items()}
