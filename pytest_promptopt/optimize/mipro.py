"""MIPRO (arXiv 2406.11695): bootstrapped demo sets x grounded instruction proposals, searched
jointly per prompt with a Bayesian optimizer (Optuna TPE) on train minibatches, the best
configurations scored on the full train set every few trials.

`Mipro` holds the plan (its sizes, shrunk to a budget) and runs the stages, each its own class:
demo screening (`screening.py`, `variants.py`), instruction proposals (`instructions.py`) and
the TPE search (`tpe.py`).

Unlike DSPy's MIPROv2, proposals come in rounds and later rounds see the scores of earlier
instructions (the history), and with `use_critique` a GRAD-SUM critique grounds them too.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from ..errors import BudgetExhausted
from .base import OptimizationContext, StrategyResult
from .demos import DemoChoice
from .instructions import Grounding, InstructionPool, cannot_start
from .screening import DemoScreening, demo_choices
from .search import Evaluator
from .split import scoring_size
from .tpe import TpeSearch, search_space
from .variants import Recombination, Reordering

# after the search, at most this many minibatch winners get a score on every train case; the
# trial plan leaves room for them
CLOSE_MOST = 3


@dataclass
class Mipro:
    name: str = "mipro"
    instructions_per_round: int = 3
    rounds: int = 2
    n_demo_sets: int = 40
    keep_demo_sets: int = 5
    recombined_sets: int = 4
    recombine_generations: int = 2
    reorder_sets: int = 2
    orders_per_set: int = 8
    max_trials: int = 24
    minibatch: int = 20
    full_eval_every: int = 5
    retrieve_ks: tuple[int, ...] = (4, 8)  # retrieved-demo options screened with the static sets
    # demo orders tried at each k (retrieval.ORDERS); a budget shrunk below half keeps the first
    retrieve_orders: tuple[str, ...] = ("majority_last", "nearest_last")
    critique_cases: int = 6  # failed train cases whose gradients make auto's critique
    summaries: bool = True  # MIPRO's data and program summaries in the proposer's grounding
    scored_cases: int | None = None  # train cases a candidate is scored on in full (None: all)
    use_critique: bool = False

    def estimate_calls(self, n_train: int, n_prompts: int, budget: int | None = None) -> int:
        return self.fitted(budget, n_train, n_prompts)._planned_calls(n_train, n_prompts)

    def _planned_calls(self, n_train: int, n_prompts: int) -> int:
        retrieval_options = len(self.retrieve_ks) * len(self.retrieve_orders)
        all_train, n_train = n_train, min(scoring_size(n_train), self.scored_cases or n_train)
        unseen = n_train  # every candidate is scored on the scoring part of train
        # two or more retrieval options are ranked on every train case (screening.best_retrieval)
        retrieval = retrieval_options * (all_train if retrieval_options > 1 else unseen)
        options = self.n_demo_sets
        screening = retrieval + unseen * (options * 0.25 + options / 2 * 0.25 + self.keep_demo_sets * 0.5
                              + self.recombine_generations * self.recombined_sets
                              + self.reorder_sets * self.orders_per_set * 0.5 + self.keep_demo_sets * 0.5)
        proposals = (self.rounds * (self.instructions_per_round + 2) + (2 if self.summaries else 0)
                     + (self.critique_cases + 1 if self.use_critique else 0))
        per_trial = min(self.minibatch, n_train) + unseen / self.full_eval_every
        return int(n_prompts * (screening + proposals) + self.max_trials * per_trial + 3 * unseen)

    def fitted(self, budget: int | None, n_train: int, n_prompts: int) -> Mipro:
        """This search shrunk to fit `budget` LM calls: fewer demo sets, recombinations, orders
        and trials, in proportion, so a small budget still reaches the search instead of
        spending everything on screening. The floors can keep a shrunk plan above the budget,
        so the proportion is tightened until the plan fits or reaches its floors."""
        estimate = self._planned_calls(n_train, n_prompts)
        if budget is None or estimate <= budget:
            return self
        plan = self
        for tighter in (1.0, 0.9, 0.8, 0.7, 0.6, 0.5):
            plan = self._shrunk(max(0.0, tighter * budget / estimate))
            if plan._planned_calls(n_train, n_prompts) <= budget:
                break
        return plan

    def _shrunk(self, f: float) -> Mipro:
        def shrink(value: int, floor: int) -> int:  # in proportion, to a floor; never larger than planned
            return min(value, max(floor, round(value * f)))

        return replace(self, n_demo_sets=min(self.n_demo_sets, max(4, int(self.n_demo_sets * f))),
                       keep_demo_sets=shrink(self.keep_demo_sets, 2), recombined_sets=shrink(self.recombined_sets, 1),
                       recombine_generations=shrink(self.recombine_generations, 1),
                       orders_per_set=shrink(self.orders_per_set, 2),
                       reorder_sets=min(self.reorder_sets, 1) if f < 0.5 else self.reorder_sets,
                       rounds=1 if f < 0.5 else self.rounds,
                       retrieve_ks=self.retrieve_ks[:1] if f < 0.5 else self.retrieve_ks,
                       retrieve_orders=self.retrieve_orders[:1] if f < 0.5 else self.retrieve_orders,
                       max_trials=min(self.max_trials, max(4, int(self.max_trials * f))))

    def _trials(self, ctx: OptimizationContext, calls_per_case: float, n_prompts: int) -> int:
        remaining = ctx.budget_remaining()
        if remaining is None:
            return self.max_trials
        n_train = min(len(ctx.scoring), self.scored_cases or len(ctx.scoring))
        per_trial = calls_per_case * (min(self.minibatch, n_train) + n_train / self.full_eval_every)
        spare = (remaining - n_prompts * self.rounds * (self.instructions_per_round + 3)
                 - CLOSE_MOST * n_train * calls_per_case)  # what _close may spend
        return max(2, min(self.max_trials, int(spare / max(per_trial, 1.0))))

    def run(self, ctx: OptimizationContext) -> StrategyResult:
        plan = self.fitted(ctx.budget_remaining(), len(ctx.train), len(ctx.original))
        if plan is not self:
            ctx.log("fitted", to_budget=ctx.budget_remaining(), n_demo_sets=plan.n_demo_sets, max_trials=plan.max_trials)
        return plan._run(ctx)

    def _run(self, ctx: OptimizationContext) -> StrategyResult:
        rng = random.Random(ctx.seed)
        notes: list[str] = []
        evaluator = Evaluator(ctx, on_score=lambda s, split, v: ctx.log("score", candidate=s.label, split=split, score=v),
                              most_cases=self.scored_cases)
        keys = sorted(ctx.original)
        choices = {key: self.demo_choices(ctx, key, rng) for key in keys}
        original_score = evaluator.entry(ctx.original).full or 0.0
        pools = {k: InstructionPool(k, ctx.original[k], original_score) for k in keys}
        trials_total = self._trials(ctx, ctx.program.calls_per_case([c.nodeid for c in ctx.train]), len(keys))
        per_round = max(1, trials_total // self.rounds)
        search = TpeSearch(ctx, evaluator, self.minibatch, self.full_eval_every, self.rounds)
        best_params: dict[str, int] | None = None
        try:
            grounding = Grounding.gather(ctx, self.summaries, self.critique_cases, self.use_critique)
            for key in keys:
                choices[key] = self.screen(ctx, evaluator, key, choices[key], rng)
            for round_ in range(self.rounds):
                for key in keys:
                    pools[key].propose(ctx, grounding, self.instructions_per_round, round_, notes)
                if round_ == 0 and all(pools[k].nothing_to_search(choices[k]) for k in keys):
                    return StrategyResult(ctx.original, original_score, tuple(notes), tuple(evaluator.train_ids),
                                          stopped=cannot_start(ctx, list(pools.values())))
                space = search_space(keys, {k: pools[k].prompts for k in keys}, choices)
                best_params = search.run(space, per_round, round_, rng, best_params)
                for key in keys:
                    pools[key].rescore(evaluator)
            self._close(evaluator)
        except BudgetExhausted as exc:
            notes.append(f"stopped early: {exc}")
        best = evaluator.best_full()
        return StrategyResult(best.candidate, best.full or 0.0, tuple(notes), tuple(evaluator.train_ids))

    @staticmethod
    def _close(evaluator: Evaluator, most: int = CLOSE_MOST) -> None:
        """Score on every train case the best minibatch winners not scored so far, while they
        beat the best full-train score on their minibatches."""
        for _ in range(most):
            pending = evaluator.best_unvalidated()
            if pending is None or pending.mean_minibatch <= (evaluator.best_full().full or 0.0):
                return
            evaluator.full_train(pending.candidate, pending.label)

    def demo_choices(self, ctx: OptimizationContext, key: str, rng: random.Random) -> list[DemoChoice]:
        """The demo choices to screen for `key`: its own demos, static sets, retrieval options."""
        return demo_choices(ctx, key, rng, self.n_demo_sets, self.retrieve_ks, self.retrieve_orders)

    def screen(self, ctx: OptimizationContext, evaluator: Evaluator, key: str,
               choices: list[DemoChoice], rng: random.Random) -> list[DemoChoice]:
        """The demo choices worth searching, after halving, recombination and reordering."""
        stages = (Recombination(self.recombine_generations, self.recombined_sets),
                  Reordering(self.reorder_sets, self.orders_per_set, self.keep_demo_sets))
        return DemoScreening(self.keep_demo_sets, stages).screen(ctx, evaluator, key, choices, rng)


def auto() -> Mipro:
    """The default: MIPRO's demos and TPE search, its proposer grounded by a GRAD-SUM critique."""
    return Mipro(name="auto", use_critique=True)
