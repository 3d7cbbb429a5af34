"""`--promptopt-optimize-judges`: tune a judge file's criteria wording and demos against its labels.

A judge is a prompt and its labels are its tests. The search holds criteria rewrites and demo
sets (not the template): the labelled cases (the labels file and the
human-labelled lines of the review file) are split three ways by a digest of each case, within
each class (train 1/2, validation 1/4, holdout 1/4). The optimizer model is shown the judge's
disagreements with the humans on train, each with the human's note, and proposes N rewrites;
each is scored on train by the objective (Cohen's kappa, or balanced accuracy: never raw
agreement, which a judge that always says the majority label wins on skewed labels). A demo set
is a few train labels of each class (the original's train disagreements first), shown to the
judge as graded exchanges before the case; it is scored on train like a rewrite, but never on its
own demos. When a rewrite and a demo set both beat the original on train, the two together are
scored too. The best on train must not be worse than the original on validation, and is written back only when its
holdout figure is above the upper end of the original's 95% holdout interval. Then the card is
refreshed on the validation and holdout labels, which the wording was not tuned on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from ..errors import PromptFileError, PromptOptError
from ..llm.client import LMClient
from ..prompts.judgefile import Judge, load_judge
from ..prompts.labels import (
    LabelledCase,
    case_identity,
    load_labels,
    load_reviewed,
    merged_cases,
)
from ..prompts.writeback import apply_write, plan_judge_write
from ..run.calibration import agreement_metrics
from ..run.card import build_card, write_card
from ..run.config import JUDGE_OBJECTIVES as OBJECTIVES
from ..run.judges import JudgeBook
from .proposer import clean_instruction, fit

SPLIT = ("train", "train", "validation", "holdout")  # dealt in turn within each class, by digest
CARD_NOTE = ("measured on the validation and holdout labels only: the train labels tuned the criteria "
             "(--promptopt-optimize-judges)")
REWRITE_SYSTEM = (
    "You improve the criteria of an LLM judge so that its pass/fail verdicts agree with human labels. "
    "You are shown the current criteria and cases where the judge and the human disagreed, with the human's "
    "note on why. Write new criteria: one short paragraph a grader can apply to any case, not a list of the "
    "cases. Reply with the criteria only."
)


def split_three(keys: Sequence[str], truth: Sequence[bool]) -> dict[str, list[int]]:
    """Indexes of train, validation and holdout: within each class, cases ordered by the digest of
    their key and dealt train, train, validation, holdout. The same labels always split the same way."""
    parts: dict[str, list[int]] = {name: [] for name in SPLIT}
    for cls in (True, False):
        members = sorted((i for i, t in enumerate(truth) if t is cls),
                         key=lambda i: hashlib.sha256(keys[i].encode("utf-8")).hexdigest())
        for rank, i in enumerate(members):
            parts[SPLIT[rank % len(SPLIT)]].append(i)
    return {name: sorted(indexes) for name, indexes in parts.items()}


def objective_of(name: str, truth: Sequence[bool], judged: Sequence[bool]) -> float:
    """Kappa (0 when the judge says one thing only) or balanced accuracy."""
    from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score  # ~1 s: not on every run

    if name == "balanced_accuracy":
        return float(balanced_accuracy_score(list(truth), list(judged)))
    return 0.0 if len(set(judged)) < 2 or len(set(truth)) < 2 else float(cohen_kappa_score(list(truth), list(judged)))


@dataclass(frozen=True)
class Scored:
    criteria: str
    scores: tuple[float | None, ...]  # per labelled case, None: no readable verdict (a fail)
    demos: tuple[LabelledCase, ...] = ()
    shown: frozenset[int] = frozenset()  # the labelled cases among the demos: they never score it

    def unseen(self, indexes: Sequence[int]) -> list[int]:
        return [i for i in indexes if i not in self.shown]

    def judged(self, threshold: float, indexes: Sequence[int]) -> list[bool]:
        return [(self.scores[i] or 0.0) >= threshold for i in indexes]


@dataclass(frozen=True)
class JudgeTuning:
    judge: Judge
    objective: str
    sizes: dict[str, int]
    original: dict[str, float]
    best: dict[str, float] | None  # the best candidate's figures; None: no candidate was proposed
    holdout_interval: tuple[float | None, float | None]  # the original's 95% holdout interval
    written: bool
    why: str
    diff: str = ""
    proposals: int = 0
    notes: list[str] = field(default_factory=list)
    demo_sets: int = 0
    best_demos: int = 0  # how many demos the best candidate shows

    def lines(self) -> list[str]:
        def shown(figures: dict[str, float] | None) -> str:
            if figures is None:
                return "-"
            return ", ".join(f"{k} {figures[k]:.3f}" for k in ("train", "validation", "holdout"))
        low, high = self.holdout_interval
        interval = "-" if low is None or high is None else f"[{low:.3f}, {high:.3f}]"
        return [(f"{self.judge.path.name}: labels split train {self.sizes['train']} / validation "
                 f"{self.sizes['validation']} / holdout {self.sizes['holdout']} (by a digest of each case, within "
                 f"each class); objective {self.objective}"),
                f"  original criteria: {shown(self.original)} (holdout 95% interval {interval})",
                f"  best of {self.proposals} rewrites and {self.demo_sets} demo sets on train: {shown(self.best)}"
                + (f" (with {self.best_demos} demos)" if self.best is not None and self.best_demos else ""),
                f"  {'written back' if self.written else 'not written'}: {self.why}"]


class JudgeTuner:
    """Tunes one judge file's criteria and demos; `client` is the optimizer model's, `book` grades cases."""

    def __init__(self, book: JudgeBook, client: LMClient, *, objective: str, proposals: int, demo_sets: int = 0,
                 demos_per_class: int = 2, log: Callable[[str], None] = lambda _: None) -> None:
        if objective not in OBJECTIVES:
            raise PromptOptError(f"unknown judge objective {objective!r}; allowed: {', '.join(OBJECTIVES)}")
        self.book, self.client, self.objective, self.proposals, self.log = book, client, objective, proposals, log
        self.demo_sets, self.demos_per_class = demo_sets, demos_per_class

    def tune(self, judge: Judge) -> JudgeTuning:
        if judge.labels_path is None:
            raise PromptFileError(judge.path, "has no labelled set to tune on", field="labels",
                                  fix=f"add labels: {judge.path.stem}.labels.jsonl")
        labels = load_labels(judge.labels_path)
        cases = merged_cases(labels, load_reviewed(judge.review_path))
        threshold = self.book.threshold(judge)
        truth = [c.passed(threshold) for c in cases]
        if min(sum(truth), len(truth) - sum(truth)) < len(SPLIT):
            raise PromptFileError(labels.path, f"too few labels to split three ways: {sum(truth)} pass and "
                                               f"{len(truth) - sum(truth)} fail at the threshold {threshold:g}",
                                  field="verdict", fix=f"label at least {len(SPLIT)} cases of each class "
                                                       "(20 or more each for intervals narrow enough to act on)")
        parts = split_three([f"{c.output}\n{c.expected}" for c in cases], truth)
        original = self._score(judge, cases, judge.criteria, judge.demos)
        rewrites = self._propose(judge, cases, truth, original, parts["train"], threshold)
        scored = [self._score(judge, cases, text, judge.demos) for text in rewrites]
        wrong = [i for i in parts["train"] if ((original.scores[i] or 0.0) >= threshold) != truth[i]]
        shown = [self._score(judge, cases, judge.criteria, tuple(cases[i] for i in chosen))
                 for chosen in demo_sets(cases, truth, parts["train"], wrong, self.demo_sets, self.demos_per_class)]
        figures = {id(c): self._figures(c, truth, parts, threshold) for c in [original, *scored, *shown]}
        scored += shown + self._together(judge, cases, original, scored, shown, figures, truth, parts, threshold)
        best = max(scored, key=lambda c: figures[id(c)]["train"], default=None)
        held = original.unseen(parts["holdout"])
        metric = "kappa" if self.objective == "kappa" else "balanced_accuracy"
        interval = agreement_metrics([truth[i] for i in held], original.judged(threshold, held))[1][metric]
        tuning = JudgeTuning(judge, self.objective, {k: len(v) for k, v in parts.items()}, figures[id(original)],
                             None if best is None else figures[id(best)], (interval.low, interval.high),
                             False, "", proposals=len(rewrites), demo_sets=len(shown),
                             best_demos=0 if best is None else len(best.demos))
        return self._decide(tuning, best, cases, truth, parts, threshold)

    def _together(self, judge: Judge, cases: Sequence[LabelledCase], original: Scored, rewrites: list[Scored],
                  shown: list[Scored], figures: dict[int, dict[str, float]], truth: list[bool],
                  parts: dict[str, list[int]], threshold: float) -> list[Scored]:
        """The best rewrite with the best demo set, when each beats the original on train alone."""
        base = figures[id(original)]["train"]
        best_rewrite = max(rewrites, key=lambda c: figures[id(c)]["train"], default=None)
        best_demos = max(shown, key=lambda c: figures[id(c)]["train"], default=None)
        if best_rewrite is None or best_demos is None or \
                min(figures[id(best_rewrite)]["train"], figures[id(best_demos)]["train"]) <= base:
            return []
        both = self._score(judge, cases, best_rewrite.criteria, best_demos.demos)
        figures[id(both)] = self._figures(both, truth, parts, threshold)
        return [both]

    def _figures(self, scored: Scored, truth: list[bool], parts: dict[str, list[int]],
                 threshold: float) -> dict[str, float]:
        out = {}
        for name, indexes in parts.items():
            idx = scored.unseen(indexes)
            out[name] = objective_of(self.objective, [truth[i] for i in idx], scored.judged(threshold, idx))
        return out

    def _score(self, judge: Judge, cases: Sequence[LabelledCase], criteria: str,
               demos: tuple[LabelledCase, ...]) -> Scored:
        scores = self.book.grade_cases(judge, cases, self.book.threshold(judge), judge.path, criteria, demos)
        identities = {case_identity(d) for d in demos}
        own = frozenset(i for i, c in enumerate(cases) if case_identity(c) in identities)
        return Scored(criteria, tuple(scores), demos, own)

    def _propose(self, judge: Judge, cases: Sequence[LabelledCase], truth: list[bool], original: Scored,
                 train: list[int], threshold: float) -> list[str]:
        """Rewrites from the optimizer model, shown the train disagreements with the humans' notes."""
        wrong = [i for i in train if ((original.scores[i] or 0.0) >= threshold) != truth[i]]
        evidence = []
        for n, i in enumerate(wrong[:8], start=1):
            case = cases[i]
            fields = [("output", case.output), ("human verdict", "pass" if truth[i] else "fail"),
                      ("judge verdict", f"{'pass' if not truth[i] else 'fail'} (score {original.scores[i]})")]
            fields += [("expected", case.expected)] if case.expected else []
            fields += [("human's note", case.note)] if case.note else []
            evidence.append(f"Case {n}:\n" + fit(fields, 1200))
        user = (f"CURRENT CRITERIA:\n{judge.criteria}\n\nThe judge passes at score {threshold:g}. "
                f"{len(wrong)} of {len(train)} training cases disagree with the humans.\n\n" + "\n\n".join(evidence)
                + "\n\nWrite the new criteria now.")
        out: list[str] = []
        for draw in range(self.proposals):
            seed = int(hashlib.sha256(f"judge:{judge.name}:{draw}".encode()).hexdigest()[:8], 16)
            request = self.client.request([{"role": "system", "content": REWRITE_SYSTEM},
                                           {"role": "user", "content": user}],
                                          {"temperature": 0.7, "max_tokens": 300, "seed": seed})
            try:
                text = clean_instruction(self.client.complete(request).text, 1500)
            except PromptOptError as exc:
                self.log(f"optimizer model call failed: {exc}")
                continue
            if text and text != judge.criteria and text not in out:
                out.append(text)
        return out

    def _decide(self, tuning: JudgeTuning, best: Scored | None, cases: Sequence[LabelledCase], truth: list[bool],
                parts: dict[str, list[int]], threshold: float) -> JudgeTuning:
        o, high = tuning.original, tuning.holdout_interval[1]
        if best is None or tuning.best is None:
            return _with(tuning, why="the optimizer model proposed no usable rewrite and no demo set was tried")
        b = tuning.best
        if b["train"] <= o["train"]:
            return _with(tuning, why=f"no candidate beat the original on train ({b['train']:.3f} <= {o['train']:.3f})")
        if b["validation"] < o["validation"]:
            return _with(tuning, why=f"the best on train is worse on validation ({b['validation']:.3f} < "
                                     f"{o['validation']:.3f})")
        if high is None or b["holdout"] <= high:
            return _with(tuning, why=f"holdout {b['holdout']:.3f} does not beat the original's interval "
                                     f"(upper end {'-' if high is None else f'{high:.3f}'})")
        pending = plan_judge_write(tuning.judge, best.criteria, best.demos)
        apply_write(pending)
        self._refresh_card(load_judge(tuning.judge.path), best, cases, truth,
                           parts["validation"] + parts["holdout"], threshold)
        return _with(tuning, written=True, diff=pending.diff(),
                     why=f"holdout {b['holdout']:.3f} > the original's interval upper end {high:.3f}; card "
                         "refreshed on the validation and holdout labels")

    def _refresh_card(self, judge: Judge, best: Scored, cases: Sequence[LabelledCase], truth: list[bool],
                      indexes: list[int], threshold: float) -> None:
        graded = [i for i in best.unseen(sorted(indexes)) if best.scores[i] is not None]
        card = build_card(judge.path.name, self.book.identity(judge), [f"{cases[i].line}:{cases[i].output}" for i in graded],
                          [truth[i] for i in graded], [float(best.scores[i] or 0.0) for i in graded], threshold,
                          ungraded=len(best.unseen(indexes)) - len(graded),
                          warnings=[CARD_NOTE])
        write_card(judge.card_path, card)
        self.book.forget(judge)


def demo_sets(cases: Sequence[LabelledCase], truth: Sequence[bool], train: Sequence[int], wrong: Sequence[int],
              count: int, per_class: int) -> list[tuple[int, ...]]:
    """`count` distinct sets of train cases to show as demos: `per_class` of each class, the
    original's train disagreements first (what the judge gets wrong is what it must be shown),
    each group in an order drawn per set from a digest of each case; passes and fails alternate, a
    fail last. The same labels always give the same sets."""
    missed = set(wrong)
    out: list[tuple[int, ...]] = []
    for draw in range(count):
        def order(i: int, draw: int = draw) -> tuple[bool, str]:
            key = f"demos:{draw}:{cases[i].output}\n{cases[i].expected}"
            return i not in missed, hashlib.sha256(key.encode("utf-8")).hexdigest()
        passes = sorted((i for i in train if truth[i]), key=order)[:per_class]
        fails = sorted((i for i in train if not truth[i]), key=order)[:per_class]
        chosen = tuple(x for pair in zip(passes, fails) for x in pair)
        if chosen and chosen not in out:
            out.append(chosen)
    return out


def _with(tuning: JudgeTuning, **changes: object) -> JudgeTuning:
    return replace(tuning, **changes)  # type: ignore[arg-type]


__all__ = ["OBJECTIVES", "JudgeTuner", "JudgeTuning", "demo_sets", "objective_of", "split_three"]
