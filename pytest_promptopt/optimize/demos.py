"""Demo candidates (MIPRO's bootstrapping) from train traces.

Passing train cases give bootstrapped demos: the inputs and the output that passed. Failing
train cases whose expected answer is known (a failed `assert out == expected`, or
`checks.equals`) give labelled demos. Only the variables that vary between cases become demo
inputs; constants (such as the label list) come from the call at render time.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

from ..prompts.prompt import Demo, Prompt
from ..run.record import CaseOutcome


@dataclass(frozen=True)
class Retrieve:
    """A demo choice that retrieves `k` demos per call from a pool of train demos."""

    pool: tuple[Demo, ...]
    k: int
    order: str = "nearest_last"


DemoChoice = Union["tuple[DemoOption, ...]", Retrieve, None]  # None: the prompt's own demos


def with_choice(prompt: Prompt, choice: DemoChoice) -> Prompt:
    """`prompt` with the demo choice applied: its own demos, a static set, or retrieval."""
    if choice is None:
        return prompt
    if isinstance(choice, Retrieve):
        return prompt.with_retrieval(choice.pool, choice.k, order=choice.order)
    return prompt.with_demos(tuple(o.demo for o in choice))


@dataclass(frozen=True)
class DemoOption:
    demo: Demo
    source: str  # nodeid of the train case it came from
    kind: str  # "bootstrapped" | "labelled"


def demo_pool(prompt_key: str, cases: Sequence[CaseOutcome]) -> list[DemoOption]:
    """Demos from the calls of `prompt_key` in these test runs, in their order."""
    traced = [(c, call) for c in cases for call in c.calls if call.prompt_key == prompt_key]
    if not traced:
        return []
    names = {k for _, call in traced for k in call.inputs}
    varying = sorted(n for n in names if len({call.inputs.get(n) for _, call in traced}) > 1) or sorted(names)
    pool: list[DemoOption] = []
    seen: set[tuple[tuple[str, str], ...]] = set()
    for case, call in traced:
        inputs = {n: call.inputs[n] for n in varying if n in call.inputs}
        key = tuple(sorted(inputs.items()))
        if key in seen:
            continue
        if case.passed and call.output.strip():
            pool.append(DemoOption(Demo(inputs, call.output.strip()), case.nodeid, "bootstrapped"))
            seen.add(key)
        elif call.expected is not None:
            pool.append(DemoOption(Demo(inputs, call.expected.strip()), case.nodeid, "labelled"))
            seen.add(key)
    return pool


def demo_sets(pool: Sequence[DemoOption], n_sets: int, rng: random.Random, max_demos: int = 24) -> list[tuple[DemoOption, ...]]:
    """Candidate demo sets: stratified by answer, so every answer the tests expect is shown."""
    if not pool:
        return []
    by_output: dict[str, list[DemoOption]] = defaultdict(list)
    for option in pool:
        by_output[option.demo.output.casefold()].append(option)
    groups = list(by_output.values())
    # Stratify when answers repeat (classification); otherwise show a third of the pool, so
    # most train cases stay unseen and can score the set.
    stratify = len(groups) * 2 <= len(pool)
    free_size = max(1, min(8, len(pool) // 3))
    sets: list[tuple[DemoOption, ...]] = []
    seen: set[tuple[str, ...]] = set()
    for i in range(n_sets * 3):
        if len(sets) >= n_sets:
            break
        per_answer = (2, 1, 2, 3)[i % 4]  # mostly two demos per answer
        chosen: list[DemoOption] = []
        if stratify and len(groups) * per_answer <= max_demos:
            for group in groups:
                chosen.extend(rng.sample(group, min(per_answer, len(group))))
        else:
            size = max(1, free_size * (1 + i % 3) // 3)
            chosen = rng.sample(list(pool), min(size, max_demos))
        rng.shuffle(chosen)
        key = tuple(sorted(o.source for o in chosen))
        if key not in seen:
            seen.add(key)
            sets.append(tuple(chosen))
    return sets


def recombine(scored_sets: Sequence[tuple[tuple[DemoOption, ...], float]], n_sets: int,
              rng: random.Random) -> list[tuple[DemoOption, ...]]:
    """New sets from the demos that did best: each demo is credited with the mean score of the
    screened sets that contained it; per answer, the best-credited demos are combined."""
    credit: dict[str, list[float]] = defaultdict(list)
    by_source: dict[str, DemoOption] = {}
    sizes: dict[str, list[int]] = defaultdict(list)
    for demo_set, score in scored_sets:
        counts: dict[str, int] = defaultdict(int)
        for option in demo_set:
            credit[option.source].append(score)
            by_source[option.source] = option
            counts[option.demo.output.casefold()] += 1
        for answer, n in counts.items():
            sizes[answer].append(n)
    if not credit:
        return []
    ranked: dict[str, list[DemoOption]] = defaultdict(list)
    for source in sorted(credit, key=lambda s: -sum(credit[s]) / len(credit[s])):
        option = by_source[source]
        ranked[option.demo.output.casefold()].append(option)
    out: list[tuple[DemoOption, ...]] = []
    for variant in range(n_sets):
        chosen: list[DemoOption] = []
        for answer, options in ranked.items():
            k = max(1, round(sum(sizes[answer]) / len(sizes[answer])))
            # variant 0 takes the top k; later variants swap in the next-best demo for some answers
            picked = options[:k] if variant == 0 or rng.random() < 0.5 else (options[1 : k + 1] or options[:k])
            chosen.extend(picked)
        rng.shuffle(chosen)
        if tuple(chosen) not in out:
            out.append(tuple(chosen))
    return out


def retrieval_pool(prompt_key: str, cases: Sequence[CaseOutcome], train: set[str] | frozenset[str]) -> tuple[Demo, ...]:
    """The pool for retrieved demos: the bootstrapped and labelled demos of the *train* cases,
    in case order. Other cases are dropped even when passed in, so no case the acceptance test
    scores can ever be shown its own answer."""
    return pool_from_options(demo_pool(prompt_key, [c for c in cases if c.nodeid in train]), train)


def pool_from_options(options: Sequence[DemoOption], train_nodeids: set[str] | frozenset[str]) -> tuple[Demo, ...]:
    """Demos of the options that came from train cases, first occurrence of each input kept."""
    pool: list[Demo] = []
    seen: set[tuple[tuple[str, str], ...]] = set()
    for option in options:
        key = tuple(sorted(option.demo.inputs.items()))
        if option.source in train_nodeids and key not in seen:
            seen.add(key)
            pool.append(option.demo)
    return tuple(pool)
