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

from ..prompts import Demo
from .base import Case


@dataclass(frozen=True)
class DemoOption:
    demo: Demo
    source: str  # nodeid of the train case it came from
    kind: str  # "bootstrapped" | "labelled"


def demo_pool(prompt_key: str, cases: Sequence[Case]) -> list[DemoOption]:
    traced = [(c, i, t) for c in cases for i, t in enumerate(c.record.traces) if t.prompt_key == prompt_key]
    if not traced:
        return []
    names = {k for _, _, t in traced for k in t.variables}
    varying = sorted(n for n in names if len({t.variables.get(n) for _, _, t in traced}) > 1) or sorted(names)
    pool: list[DemoOption] = []
    seen: set[tuple[tuple[str, str], ...]] = set()
    for case, index, trace in traced:
        inputs = {n: trace.variables[n] for n in varying if n in trace.variables}
        key = tuple(sorted(inputs.items()))
        if key in seen:
            continue
        if case.passed and trace.output.strip():
            pool.append(DemoOption(Demo(inputs, trace.output.strip()), case.nodeid, "bootstrapped"))
            seen.add(key)
            continue
        label = next((lb.expected for lb in case.record.labels if lb.trace_index == index), None)
        if label is not None:
            pool.append(DemoOption(Demo(inputs, label.strip()), case.nodeid, "labelled"))
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


def retrieval_pool(prompt_key: str, cases: Sequence[Case]) -> tuple[Demo, ...]:
    """The pool for retrieved demos: the bootstrapped and labelled demos of the *train* cases,
    in case order. Validation cases are dropped even when passed in, so no case the acceptance
    test scores can ever be shown its own answer."""
    return pool_from_options(demo_pool(prompt_key, [c for c in cases if c.split == "train"]),
                             {c.nodeid for c in cases if c.split == "train"})


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
