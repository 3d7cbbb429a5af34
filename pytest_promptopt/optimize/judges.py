"""`--promptopt-optimize-judges`: tune a judge file's criteria, template and demos against its labels.

A judge is a prompt and its labels are its tests. The labelled cases (the labels file and the
human-labelled lines of the review file) are split three ways by a digest of each case, within
each class (train 1/2, validation 1/4, holdout 1/4). The search space, each part sized by the
preset (defaults.JUDGE_SEARCH):

- criteria rewrites and template (system prompt) rewrites from the optimizer model, which is
  shown the judge's train disagreements with the humans, each with the human's note;
- static demo sets: a few train labels of each class (the judge's train mistakes first), shown as
  graded exchanges before the case, never scoring a candidate on its own demos;
- retrieval: the k train labels nearest each case (BM25), a case never shown itself;
- together: the best of each part that beat the original on train, combined.

Every candidate is scored on the same train cases by the objective (Cohen's kappa, or balanced
accuracy: never raw agreement, which a judge that always says the majority label wins on skewed
labels). The one rule for "best": the highest train figure, the earlier candidate on a tie (the
original, then the simpler kinds in the order above). Only the best is scored on validation and
holdout; it must not be worse than the original on validation, and is written back only when
its holdout figure is above the upper end of the original's 95% holdout interval. Then the card
is refreshed on the validation and holdout labels, which the search did not tune on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from ..errors import PromptFileError, PromptOptError
from ..llm.client import LMClient
from ..prompts.judge_pool import JudgePool
from ..prompts.judgefile import Judge, load_judge
from ..prompts.labels import LabelledCase
from ..prompts.writeback import apply_write, plan_judge_write
from ..run.calibration import agreement_metrics
from ..run.card import build_card, write_card
from ..run.config import JUDGE_OBJECTIVES as OBJECTIVES
from ..run.judge import builtin_system, guarded_system
from ..run.judges import JudgeBook
from .judge_proposals import REWRITE_SYSTEM, TEMPLATE_SYSTEM, Disagreement, JudgeProposer, evidence_text

SPLIT = ("train", "train", "validation", "holdout")  # dealt in turn within each class, by digest
KINDS = ("original", "criteria", "template", "demos", "retrieve", "together")  # tie order: earlier wins
CARD_NOTE = ("measured on the validation and holdout labels only: the train labels tuned the judge "
             "(--promptopt-optimize-judges)")
CARD_POOL_NOTE = "retrieved demos were drawn from the train labels only while these labels were measured"


@dataclass(frozen=True)
class JudgeSearch:
    """How much of the search space is tried (a preset's row of defaults.JUDGE_SEARCH)."""

    rewrites: int = 4
    templates: int = 2
    demo_sets: int = 3
    demos_per_class: int = 2
    retrieve_ks: tuple[int, ...] = (4, 8)
    seed: int = 0

    @classmethod
    def of(cls, knobs: Mapping[str, object], seed: int = 0) -> JudgeSearch:
        return cls(**{**knobs, "retrieve_ks": tuple(knobs.get("retrieve_ks", ())), "seed": seed})  # type: ignore[arg-type]


def split_three(keys: Sequence[str], truth: Sequence[bool]) -> dict[str, list[int]]:
    """Indexes of train, validation and holdout: within each class, the distinct keys ordered by
    their digest and dealt train, train, validation, holdout; cases with the same key (the judge
    sees the same text) go where the first of them went, so no held-out case has a twin that could
    be shown as a demo. The same labels always split the same way."""
    parts: dict[str, list[int]] = {name: [] for name in SPLIT}
    dealt: dict[str, str] = {}
    for cls in (True, False):
        members = sorted((i for i, t in enumerate(truth) if t is cls),
                         key=lambda i: hashlib.sha256(keys[i].encode("utf-8")).hexdigest())
        rank = 0
        for i in members:
            if keys[i] not in dealt:
                dealt[keys[i]] = SPLIT[rank % len(SPLIT)]
                rank += 1
            parts[dealt[keys[i]]].append(i)
    return {name: sorted(indexes) for name, indexes in parts.items()}


def split_key(case: LabelledCase) -> str:
    """The key a labelled case is split by: what the judge sees of it (`LabelledCase.seen`)."""
    return f"{case.output}\n{case.expected}"


def objective_of(name: str, truth: Sequence[bool], judged: Sequence[bool]) -> float:
    """Kappa (0 when the judge says one thing only) or balanced accuracy."""
    from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score  # ~1 s: not on every run

    if name == "balanced_accuracy":
        return float(balanced_accuracy_score(list(truth), list(judged)))
    return 0.0 if len(set(judged)) < 2 or len(set(truth)) < 2 else float(cohen_kappa_score(list(truth), list(judged)))


@dataclass(frozen=True)
class Candidate:
    """A judge as the search would write it, and its scores on the labelled cases graded so far."""

    kind: str  # one of KINDS
    judge: Judge
    scores: Mapping[int, float | None] = field(default_factory=dict)  # None: no readable verdict (a fail)
    shown: frozenset[int] = frozenset()  # the labelled cases among its static demos: they never score it

    def unseen(self, indexes: Sequence[int]) -> list[int]:
        return [i for i in indexes if i not in self.shown]

    def judged(self, threshold: float, indexes: Sequence[int]) -> list[bool]:
        return [(self.scores[i] or 0.0) >= threshold for i in indexes]

    def describe(self, original: Judge) -> str:
        parts = [name for name, changed in (("criteria", self.judge.criteria != original.criteria),
                                             ("template", self.judge.system != original.system)) if changed]
        if self.judge.demos != original.demos:
            parts.append(f"{len(self.judge.demos)} demos")
        if self.judge.retrieve_k != original.retrieve_k:
            parts.append(f"{self.judge.retrieve_k} retrieved labels per call")
        return " + ".join(parts) or "unchanged"


@dataclass(frozen=True)
class JudgeTuning:
    judge: Judge
    objective: str
    sizes: dict[str, int]
    original: dict[str, float]
    best: dict[str, float] | None  # the best candidate's figures; None: no candidate was tried
    holdout_interval: tuple[float | None, float | None]  # the original's 95% holdout interval
    written: bool
    why: str
    diff: str = ""
    tried: Mapping[str, int] = field(default_factory=dict)  # candidates scored, by kind
    best_is: str = ""  # what the best candidate changes
    calls: int = 0  # judge calls the search asked for (each through the cache)
    best_interval: tuple[float | None, float | None] = (None, None)  # the best's 95% holdout interval

    def lines(self) -> list[str]:
        def shown(figures: dict[str, float] | None) -> str:
            if figures is None:
                return "-"
            return ", ".join(f"{k} {figures[k]:.3f}" for k in ("train", "validation", "holdout") if k in figures)

        def interval(bounds: tuple[float | None, float | None]) -> str:
            low, high = bounds
            return "-" if low is None or high is None else f"[{low:.3f}, {high:.3f}]"
        tried = ", ".join(f"{n} {kind}" for kind, n in self.tried.items() if n)
        best_holdout = self.best is not None and "holdout" in self.best
        scored = self.sizes.get("train_scored", self.sizes["train"])
        return [(f"{self.judge.path.name}: labels split train {self.sizes['train']} / validation "
                 f"{self.sizes['validation']} / holdout {self.sizes['holdout']} (by a digest of each case, within "
                 f"each class); objective {self.objective}"),
                f"  every candidate compared on the same {scored} train labels"
                + (f" (the other {self.sizes['train'] - scored} are the static demo sets' source)"
                   if scored != self.sizes["train"] else ""),
                f"  original: {shown(self.original)} (holdout 95% interval {interval(self.holdout_interval)})",
                f"  best of {sum(self.tried.values())} candidates on train ({tried or 'none'}): {shown(self.best)}"
                + (f" (holdout 95% interval {interval(self.best_interval)})" if best_holdout else "")
                + (f" ({self.best_is})" if self.best is not None and self.best_is else ""),
                f"  {self.calls} judge calls asked (cached ones included)",
                f"  {'written back' if self.written else 'not written'}: {self.why}"]


class JudgeTuner:
    """Tunes one judge file; `client` is the optimizer model's, `book` grades cases."""

    def __init__(self, book: JudgeBook, client: LMClient, *, objective: str, search: JudgeSearch,
                 mode: Callable[[Judge], str], log: Callable[[str], None] = lambda _: None) -> None:
        if objective not in OBJECTIVES:
            raise PromptOptError(f"unknown judge objective {objective!r}; allowed: {', '.join(OBJECTIVES)}")
        self.book, self.objective, self.search, self.mode, self.log = book, objective, search, mode, log
        self.proposer = JudgeProposer(client, search.seed, log)

    def tune(self, judge: Judge) -> JudgeTuning:
        cases = self.book.labelled(judge)
        threshold = self.book.threshold(judge)
        truth = [c.passed(threshold) for c in cases]
        if min(sum(truth), len(truth) - sum(truth)) < len(SPLIT):
            raise PromptFileError(judge.labels_path or judge.path,
                                  f"too few labels to split three ways: {sum(truth)} pass and "
                                  f"{len(truth) - sum(truth)} fail at the threshold {threshold:g}",
                                  field="verdict", fix=f"label at least {len(SPLIT)} cases of each class "
                                                       "(20 or more each for intervals narrow enough to act on)")
        run = _Run(self, judge, cases, truth, threshold, split_three([split_key(c) for c in cases], truth))
        return run.tune()


class _Run:
    """One judge's search: the labels, their split, and the candidates scored."""

    def __init__(self, tuner: JudgeTuner, judge: Judge, cases: Sequence[LabelledCase], truth: list[bool],
                 threshold: float, parts: dict[str, list[int]]) -> None:
        self.tuner, self.judge, self.cases, self.truth, self.threshold, self.parts = \
            tuner, judge, cases, truth, threshold, parts
        self.pool = JudgePool(tuple(cases[i] for i in parts["train"]))  # retrieval never shows a held-out label
        self.demo_source: frozenset[int] = frozenset()  # train labels some static demo set shows: never scored
        self.calls = 0

    def tune(self) -> JudgeTuning:
        train, log = self.parts["train"], self.tuner.log
        log(f"{self.judge.path.name}: scoring the original on all {len(self.cases)} labels")
        # the file's own demos (a past tuning drew them from these labels) never score it or its variants
        original = self._score(self._with_demos(self.judge, self.judge.demos, "original"), sorted(range(len(self.cases))))
        log(f"{self.judge.path.name}: asking the optimizer model for rewrites")
        wrong = [i for i in train if self._passes(original, i) != self.truth[i]]
        candidates = self._candidates(original, wrong)
        log(f"{self.judge.path.name}: original {self.tuner.objective} on train {self._figure(original, 'train'):.3f}; "
            f"{len(candidates)} candidates to score on the same {len(self.scoring('train'))} train labels")
        scored = self._scored_on_train(candidates)
        scored += self._scored_on_train(self._together(original, scored))
        best = max([original, *scored], key=lambda c: self._figure(c, "train"))  # first on a tie
        if best is not original:
            log(f"{self.judge.path.name}: scoring the best ({best.describe(self.judge)}) on validation and holdout")
            best = self._score(best, self.parts["validation"] + self.parts["holdout"])
        tried = {kind: sum(c.kind == kind for c in scored) for kind in KINDS[1:]}
        tuning = JudgeTuning(self.judge, self.tuner.objective, {k: len(v) for k, v in self.parts.items()}
                             | {"train_scored": len(self.scoring("train"))},
                             self._figures(original), None if not scored else self._figures(best),
                             self._holdout_interval(original), False, "", tried=tried,
                             best_is=best.describe(self.judge), calls=self.calls,
                             best_interval=self._holdout_interval(best))
        return self._decide(tuning, best)

    # -- the search space ------------------------------------------------------------------
    def _candidates(self, original: Candidate, wrong: list[int]) -> list[Candidate]:
        search, judge, mode = self.tuner.search, self.judge, self.tuner.mode(self.judge)
        evidence = evidence_text([Disagreement(self.cases[i], self.truth[i], original.scores[i]) for i in wrong],
                                 len(self.parts["train"]))
        proposer = self.tuner.proposer
        shown = original.shown
        out = [Candidate("criteria", replace(judge, criteria=text), shown=shown)
               for text in proposer.criteria(judge, self.threshold, evidence, search.rewrites)]
        current = judge.system or builtin_system(mode)
        out += [Candidate("template", replace(judge, system=guarded_system(mode, text)), shown=shown)
                for text in proposer.template(judge, current, evidence, search.templates)]
        sets = demo_sets(self.cases, self.truth, self.parts["train"], wrong, search.demo_sets,
                         search.demos_per_class, search.seed)
        # Every candidate is compared on the same train labels: those no demo set shows (a
        # candidate scored on fewer, easier or harder, cases would be compared unlike with like).
        self.demo_source = frozenset(i for chosen in sets for i in chosen) | (shown & set(self.parts["train"]))
        out += [self._with_demos(judge, tuple(self.cases[i] for i in chosen)) for chosen in sets]
        out += [Candidate("retrieve", replace(judge, retrieve_k=k), shown=shown) for k in search.retrieve_ks
                if k != judge.retrieve_k and k < len(self.parts["train"])]
        return out

    def _with_demos(self, judge: Judge, demos: tuple[LabelledCase, ...], kind: str = "demos") -> Candidate:
        identities = {d.seen for d in demos}
        own = frozenset(i for i, c in enumerate(self.cases) if c.seen in identities)
        return Candidate(kind, replace(judge, demos=demos), shown=own)

    def _together(self, original: Candidate, scored: list[Candidate]) -> list[Candidate]:
        """The best criteria, the best template and the best demos or retrieval combined, of the
        parts whose best beat the original on train, when two or more did."""
        base = self._figure(original, "train")
        winners = {}
        for group in (("criteria",), ("template",), ("demos", "retrieve")):
            members = [c for c in scored if c.kind in group]
            top = max(members, key=lambda c: self._figure(c, "train"), default=None)
            if top is not None and self._figure(top, "train") > base:
                winners[group[0]] = top.judge
        if len(winners) < 2:
            return []
        shown = winners.get("demos", self.judge)
        combined = replace(self.judge, criteria=winners.get("criteria", self.judge).criteria,
                           system=winners.get("template", self.judge).system, retrieve_k=shown.retrieve_k)
        return [self._with_demos(combined, shown.demos, "together")]

    # -- scoring ---------------------------------------------------------------------------
    def _scored_on_train(self, candidates: list[Candidate]) -> list[Candidate]:
        out = []
        for n, candidate in enumerate(candidates, start=1):
            out.append(self._score(candidate, self.scoring("train")))
            self.tuner.log(f"{self.judge.path.name}: {candidate.kind} candidate {n} of {len(candidates)} "
                           f"({candidate.describe(self.judge)}): {self.tuner.objective} on train "
                           f"{self._figure(out[-1], 'train'):.3f}")
        return out

    def _score(self, candidate: Candidate, indexes: Sequence[int]) -> Candidate:
        todo = [i for i in candidate.unseen(indexes) if i not in candidate.scores]
        self.calls += len(todo) * max(1, len(candidate.judge.models))
        graded = self.tuner.book.grade_cases(candidate.judge, [self.cases[i] for i in todo], self.threshold,
                                             self.judge.path, self.pool)
        return replace(candidate, scores={**candidate.scores, **dict(zip(todo, graded))})

    def _passes(self, candidate: Candidate, i: int) -> bool:
        return (candidate.scores[i] or 0.0) >= self.threshold

    def scoring(self, part: str) -> list[int]:
        """The labels of `part` every candidate is compared on: on train, those no demo set shows."""
        return [i for i in self.parts[part] if i not in self.demo_source]

    def _figure(self, candidate: Candidate, part: str) -> float:
        idx = [i for i in candidate.unseen(self.scoring(part)) if i in candidate.scores]
        return objective_of(self.tuner.objective, [self.truth[i] for i in idx], candidate.judged(self.threshold, idx))

    def _holdout_interval(self, candidate: Candidate) -> tuple[float | None, float | None]:
        """The candidate's 95% interval of the objective's metric on the holdout labels it never saw."""
        held = [i for i in candidate.unseen(self.parts["holdout"]) if i in candidate.scores]
        if not held:
            return None, None
        metric = "kappa" if self.tuner.objective == "kappa" else "balanced_accuracy"
        figure = agreement_metrics([self.truth[i] for i in held], candidate.judged(self.threshold, held))[1][metric]
        return figure.low, figure.high

    def _figures(self, candidate: Candidate) -> dict[str, float]:
        return {part: self._figure(candidate, part) for part in self.parts
                if any(i in candidate.scores for i in self.parts[part])}

    # -- acceptance and write-back ---------------------------------------------------------
    def _decide(self, tuning: JudgeTuning, best: Candidate) -> JudgeTuning:
        o, high = tuning.original, tuning.holdout_interval[1]
        if tuning.best is None:
            return replace(tuning, why="no candidate was tried (the optimizer model proposed nothing usable, and the "
                                       "preset tries no demo sets or retrieval, or too few train labels for them)")
        b = tuning.best
        if best.kind == "original":
            return replace(tuning, why=f"no candidate beat the original on train (best {b['train']:.3f})")
        if b["validation"] < o["validation"]:
            return replace(tuning, why=f"the best on train is worse on validation ({b['validation']:.3f} < "
                                       f"{o['validation']:.3f})")
        if high is None or b["holdout"] <= high:
            return replace(tuning, why=f"holdout {b['holdout']:.3f} does not beat the original's interval "
                                       f"(upper end {'-' if high is None else f'{high:.3f}'})")
        tuned = best.judge
        pending = plan_judge_write(self.judge, tuned.criteria, tuned.demos, system=tuned.system,
                                   retrieve_k=tuned.retrieve_k)
        apply_write(pending)
        self._refresh_card(load_judge(self.judge.path), best)
        return replace(tuning, written=True, diff=pending.diff(),
                       why=f"holdout {b['holdout']:.3f} > the original's interval upper end {high:.3f}; card "
                           "refreshed on the validation and holdout labels")

    def _refresh_card(self, judge: Judge, best: Candidate) -> None:
        indexes = best.unseen(sorted(self.parts["validation"] + self.parts["holdout"]))
        graded = [i for i in indexes if best.scores.get(i) is not None]
        book = self.tuner.book
        card = build_card(judge.path.name, book.identity(judge), [f"{self.cases[i].line}:{self.cases[i].output}"
                                                                  for i in graded],
                          [self.truth[i] for i in graded], [float(best.scores[i] or 0.0) for i in graded],
                          self.threshold, ungraded=len(indexes) - len(graded),
                          warnings=[CARD_NOTE, *([CARD_POOL_NOTE] if judge.retrieve_k else [])])
        write_card(judge.card_path, card)
        book.forget(judge)


def demo_sets(cases: Sequence[LabelledCase], truth: Sequence[bool], train: Sequence[int], wrong: Sequence[int],
              count: int, per_class: int, seed: int = 0) -> list[tuple[int, ...]]:
    """`count` distinct sets of train cases to show as demos: `per_class` of each class, the
    original's train disagreements first (what the judge gets wrong is what it must be shown),
    each group in an order drawn per set from a digest of each case; passes and fails alternate, a
    fail last. The same labels and seed always give the same sets."""
    missed = set(wrong)
    out: list[tuple[int, ...]] = []
    for draw in range(count):
        salt = f"demos:{draw}" if seed == 0 else f"demos:{seed}:{draw}"  # seed 0: the sets earlier runs drew

        def order(i: int, salt: str = salt) -> tuple[bool, str]:
            key = f"{salt}:{cases[i].output}\n{cases[i].expected}"
            return i not in missed, hashlib.sha256(key.encode("utf-8")).hexdigest()
        passes = sorted((i for i in train if truth[i]), key=order)[:per_class]
        fails = sorted((i for i in train if not truth[i]), key=order)[:per_class]
        chosen = tuple(x for pair in zip(passes, fails) for x in pair)
        if chosen and chosen not in out:
            out.append(chosen)
    return out


__all__ = ["KINDS", "OBJECTIVES", "REWRITE_SYSTEM", "TEMPLATE_SYSTEM", "Candidate", "JudgeSearch", "JudgeTuner",
           "JudgeTuning", "demo_sets", "objective_of", "split_three"]
