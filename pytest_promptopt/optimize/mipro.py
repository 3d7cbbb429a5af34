"""MIPRO (arXiv 2406.11695): bootstrapped demo sets x grounded instruction proposals, searched
jointly per prompt with a Bayesian optimizer (Optuna TPE) on train minibatches, the best
configurations scored on the full train set every few trials.

Unlike DSPy's MIPROv2, proposals come in rounds and later rounds see the scores of earlier
instructions (the history), and with `use_critique` a GRAD-SUM critique grounds them too.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ..errors import BudgetExhausted
from ..prompts.prompt import Prompt
from ..stats import wilson
from .base import Candidate, Evaluation, OptimizationContext, StrategyResult
from .feedback import Feedback
from .demos import DemoChoice, Retrieve, demo_sets, pool_from_options, recombine, with_choice
from .gradsum import apply_proposal, critique_from_failures
from .search import Evaluator

if TYPE_CHECKING:
    import optuna

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
        n_train = min(n_train, self.scored_cases or n_train)
        unseen = 0.7 * n_train  # a case that is one of a set's demos does not score it
        options = self.n_demo_sets
        screening = n_train * len(self.retrieve_ks) * len(self.retrieve_orders) + unseen * (options * 0.25 + options / 2 * 0.25 + self.keep_demo_sets * 0.5
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
        n_train = min(len(ctx.train), self.scored_cases or len(ctx.train))
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
        sets = {key: self._demo_sets(ctx, key, rng) for key in keys}
        instructions: dict[str, list[Prompt]] = {k: [ctx.original[k]] for k in keys}
        history = {k: [(ctx.original[k].instruction, evaluator.entry(ctx.original).full or 0.0)] for k in keys}
        trials_total = self._trials(ctx, ctx.program.calls_per_case([c.nodeid for c in ctx.train]), len(keys))
        per_round = max(1, trials_total // self.rounds)
        best_params: dict[str, int] | None = None
        try:
            grounding = self._grounding(ctx)
            for key in keys:
                sets[key] = self._screen(ctx, evaluator, key, sets[key], rng)
            for round_ in range(self.rounds):
                for key in keys:
                    self._propose(ctx, key, instructions[key], history[key], grounding, round_, notes)
                best_params = self._search(ctx, evaluator, keys, instructions, sets, per_round, round_, rng, best_params)
                for key in keys:
                    history[key] = _instruction_scores(evaluator, key, instructions[key])
            self._close(evaluator)
        except BudgetExhausted as exc:
            notes.append(f"stopped early: {exc}")
        best = evaluator.best_full()
        scored_on = tuple(evaluator.train_ids) if len(evaluator.train_ids) < len(ctx.train) else None
        return StrategyResult(best.candidate, best.full or 0.0, tuple(notes), scored_on)

    @staticmethod
    def _close(evaluator: Evaluator, most: int = CLOSE_MOST) -> None:
        """Score on every train case the best minibatch winners not scored so far, while they
        beat the best full-train score on their minibatches."""
        for _ in range(most):
            pending = evaluator.best_unvalidated()
            if pending is None or pending.mean_minibatch <= (evaluator.best_full().full or 0.0):
                return
            evaluator.full_train(pending.candidate, pending.label)

    def _demo_sets(self, ctx: OptimizationContext, key: str, rng: random.Random) -> list[DemoChoice]:
        """The demo choices to screen: the prompt's own demos, static sets, and retrieval at each k."""
        train = [c.nodeid for c in ctx.train]
        pool = ctx.program.demo_pool(key, train)
        sets: list[DemoChoice] = [None, *demo_sets(pool, self.n_demo_sets, rng)]
        ctx.log("demo_pool", prompt=key, size=len(pool), sets=len(sets) - 1, labelled=sum(o.kind == "labelled" for o in pool))
        demos = pool_from_options(pool, set(train))
        if not ctx.original[key].supports_retrieval:
            return sets
        # majority_last differs from nearest_last only when retrieved demos can share an answer
        answers_repeat = len({d.output for d in demos}) < len(demos)
        orders = [o for o in self.retrieve_orders if o != "majority_last" or answers_repeat] or ["nearest_last"]
        for k in self.retrieve_ks:
            if len(demos) > k:  # each case is left out of its own retrieval
                sets.extend(Retrieve(demos, k, order) for order in orders)
        return sets

    def _grounding(self, ctx: OptimizationContext) -> _Grounding:
        """What proposals are grounded in: data and program summaries, the train cases the
        original fails (in a seeded order) and, for auto, a GRAD-SUM critique of them."""
        proposer = ctx.proposer
        data = program = ""
        if self.summaries:
            data = proposer.data_summary([dict(i) for c in ctx.train[:12] for i in ctx.program.inputs(c.nodeid)[:1]])
            program = proposer.program_summary([ctx.program.source(c.nodeid) for c in ctx.train])
        failed = [c.nodeid for c in ctx.train if not c.passed]
        failures = ctx.program.feedback(ctx.program.evaluate(ctx.original, failed).results)
        random.Random(ctx.seed + 1).shuffle(failures)
        critique = critique_from_failures(proposer, ctx.original, failures, self.critique_cases, 0, ctx) if self.use_critique else ""
        return _Grounding(data, program, tuple(failures), critique)

    def _propose(self, ctx: OptimizationContext, key: str, instructions: list[Prompt],
                 history: list[tuple[str, float]], grounding: _Grounding, round_: int, notes: list[str]) -> None:
        """New instructions for `key`, built on the best-scoring one so far."""
        scores = dict(history)
        base = max(instructions, key=lambda p: scores.get(p.instruction, -1.0))
        proposals = ctx.proposer.propose(base, n=self.instructions_per_round, data_summary=grounding.data,
                                         program_summary=grounding.program, history=history,
                                         failures=[f for f in grounding.failures if f.prompt_key == key],
                                         critique=grounding.critique, round_=round_)
        if grounding.critique and round_ == 0:
            proposals += ctx.proposer.edit(base, grounding.critique, 1, round_)
        for proposal in proposals:
            cand = apply_proposal(ctx.original, key, base, proposal, ctx, notes)
            if cand is not None and cand[key].instruction not in {p.instruction for p in instructions}:
                instructions.append(cand[key])

    def _screen(self, ctx: OptimizationContext, evaluator: Evaluator, key: str,
                sets: list[DemoChoice], rng: random.Random) -> list[DemoChoice]:
        """Successive halving over the demo sets (original instruction) on growing shares of the
        train cases, so the search below spends its trials on the few sets that work."""
        if len(sets) <= self.keep_demo_sets + 1:
            return sets
        ids = list(evaluator.train_ids)
        rng.shuffle(ids)

        def candidate(i: int) -> Candidate:
            return {**ctx.original, key: with_choice(ctx.original[key], sets[i])}

        # Retrieval options skip the halving: they are few, each is its own regime (its cost per
        # call grows with k), and a quarter of the train cases is too few to rank them. Scored
        # first, the best of them is the bar the static sets race against.
        retrieval = [i for i in range(1, len(sets)) if isinstance(sets[i], Retrieve)]
        full = {i: evaluator.full_train(candidate(i), f"retrieve k={sets[i].k} {sets[i].order}")  # type: ignore[union-attr]
                for i in retrieval}
        bar = max(full.values(), default=None)
        alive = [i for i in range(1, len(sets)) if i not in retrieval]
        latest: dict[int, float] = dict(full)
        for share in (0.25, 0.5):
            part = ids[: max(1, int(len(ids) * share))]
            if not alive:
                break
            evaluations = {i: evaluator.evaluate(candidate(i), part) for i in alive}
            scores = {i: ev.mean for i, ev in evaluations.items()}
            latest.update(scores)
            alive = sorted(alive, key=lambda i: -scores[i])[: max(self.keep_demo_sets, len(alive) // 2)]
            alive = [i for i in alive if bar is None or could_reach(evaluations[i], bar)]
            ctx.progress(f"screening demo sets on {len(part)} train tests: {len(alive)} left, "
                         f"best {max(scores.values()):.2f}")
        full.update({i: evaluator.full_train(candidate(i), f"demo set {i}") for i in alive})
        latest.update(full)
        self._recombine(ctx, evaluator, sets, full, latest, ids[: max(1, len(ids) // 2)], candidate, bar, rng)
        self._reorder(ctx, evaluator, sets, full, ids, candidate, rng)
        kept = sorted(full, key=lambda i: -full[i])[: self.keep_demo_sets]
        ctx.log("demo_screening", prompt=key, kept=kept, train_scores={str(i): full[i] for i in kept})
        return [sets[0], *(sets[i] for i in kept)]

    def _recombine(self, ctx: OptimizationContext, evaluator: Evaluator, sets: list[DemoChoice],
                   full: dict[int, float], latest: dict[int, float], half: list[str],
                   candidate: Callable[[int], Candidate], bar: float | None, rng: random.Random) -> None:
        """New static sets from the best-credited demos, raced like the screened sets: scored on
        half the train cases first, and in full only if they may still reach the retrieval bar."""
        for generation in range(self.recombine_generations):
            screened = [(sets[i], score) for i, score in latest.items() if isinstance(sets[i], tuple)]
            for j, demo_set in enumerate(recombine(screened, self.recombined_sets, rng)):  # type: ignore[arg-type]
                if demo_set in sets:
                    continue
                sets.append(demo_set)
                i, label = len(sets) - 1, f"recombined demo set {generation + 1}.{j + 1}"
                first = evaluator.evaluate(candidate(i), half)
                if bar is not None and not could_reach(first, bar):
                    latest[i] = first.mean
                    ctx.progress(f"{label}: {first.mean:.2f} on {len(first.results)} train tests, cannot reach {bar:.2f}")
                    continue
                full[i] = latest[i] = evaluator.full_train(candidate(i), label)
                ctx.progress(f"{label}: train {full[i]:.2f}")

    def _reorder(self, ctx: OptimizationContext, evaluator: Evaluator, sets: list[DemoChoice],
                 full: dict[int, float], ids: list[str], candidate: Callable[[int], Candidate], rng: random.Random) -> None:
        """The same demos in another order can score very differently (a small model leans
        towards the answers of the last demos it saw), and train predicts held-out well across
        orders, so the best sets are re-scored in shuffled orders: half the train cases first,
        then the full train set for the best few."""
        variants: list[int] = []
        for i in sorted(full, key=lambda i: -full[i])[: self.reorder_sets]:
            for _ in range(self.orders_per_set):
                chosen = sets[i]
                if not isinstance(chosen, tuple):
                    break  # retrieval orders its demos by similarity; the file's own demos stay as written
                shuffled = list(chosen)
                rng.shuffle(shuffled)
                if tuple(shuffled) not in sets:
                    sets.append(tuple(shuffled))
                    variants.append(len(sets) - 1)
        if not variants:
            return
        half = ids[: max(1, len(ids) // 2)]
        scores = {i: evaluator.evaluate(candidate(i), half).mean for i in variants}
        ctx.progress(f"reordered demo sets on {len(half)} train tests: best {max(scores.values()):.2f}")
        for i in sorted(variants, key=lambda i: -scores[i])[: self.keep_demo_sets]:
            full[i] = evaluator.full_train(candidate(i), f"reordered demo set {i}")
            ctx.progress(f"reordered demo set {i}: train {full[i]:.2f}")

    def _search(self, ctx: OptimizationContext, evaluator: Evaluator, keys: list[str],
                instructions: dict[str, list[Prompt]], sets: dict[str, list[DemoChoice]],
                trials: int, round_: int, rng: random.Random, warm: dict[str, int] | None) -> dict[str, int]:
        import optuna  # only an optimization pays for importing it

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = optuna.samplers.TPESampler(seed=ctx.seed + round_, n_startup_trials=max(3, trials // 4), multivariate=True)
        study = optuna.create_study(direction="maximize", sampler=sampler)
        if warm:
            study.enqueue_trial(warm, skip_if_exists=True)
        best: tuple[float, dict[str, int]] = (-1.0, {})
        combinations = math.prod(len(instructions[k]) * len(sets[k]) for k in keys)
        t = asked = 0
        while t < trials and asked < trials + combinations:
            asked += 1
            trial = study.ask()
            params, candidate = _suggest(trial, keys, instructions, sets)
            known = evaluator.known_full(candidate)
            if known is not None:  # scored on every train case already: TPE learns it for free
                study.tell(trial, known)
                best = max(best, (known, params), key=lambda b: b[0])
                continue
            label = f"mipro r{round_ + 1} t{t + 1} " + " ".join(f"{k.rsplit('/', 1)[-1]}:i{params[f'instruction:{k}']}d{params[f'demos:{k}']}" for k in keys)
            score = evaluator.minibatch(candidate, self.minibatch, rng, label)
            study.tell(trial, score)
            ctx.log("trial", round=round_, trial=t, params=params, score=score)
            t += 1
            if score > best[0]:
                best = (score, params)
            if t % self.full_eval_every == 0 and (pending := evaluator.best_unvalidated()) is not None:
                evaluator.full_train(pending.candidate, pending.label)
            top = evaluator.best_full()
            ctx.progress(f"mipro round {round_ + 1}/{self.rounds} trial {t}/{trials}: "
                         f"minibatch {score:.2f}, best train {top.full or 0:.2f}")
        return best[1]


@dataclass(frozen=True)
class _Grounding:
    data: str
    program: str
    failures: tuple[Feedback, ...]
    critique: str


def _suggest(trial: optuna.Trial, keys: list[str], instructions: dict[str, list[Prompt]],
             sets: dict[str, list[DemoChoice]]) -> tuple[dict[str, int], Candidate]:
    """TPE's next instruction and demo choice per prompt, and the candidate they make."""
    params: dict[str, int] = {}
    candidate: dict[str, Prompt] = {}
    for key in keys:
        i = trial.suggest_int(f"instruction:{key}", 0, len(instructions[key]) - 1)
        d = trial.suggest_int(f"demos:{key}", 0, len(sets[key]) - 1)
        params[f"instruction:{key}"], params[f"demos:{key}"] = i, d
        candidate[key] = with_choice(instructions[key][i], sets[key][d])
    return params, candidate


def could_reach(evaluation: Evaluation, bar: float) -> bool:
    """Racing: whether a demo set scored on part of the train cases may still reach `bar`, the
    best retrieval option's full-train score (the top of its 95% Wilson interval); one that
    cannot is not scored further."""
    n = len(evaluation.results)
    return wilson(round(evaluation.mean * n), n).high >= bar


def _instruction_scores(evaluator: Evaluator, key: str, instructions: list[Prompt]) -> list[tuple[str, float]]:
    """Mean score of each instruction over every configuration that used it (the history)."""
    out = []
    for prompt in instructions:
        scores = [s.full if s.full is not None else s.mean_minibatch
                  for s in evaluator.scored.values()
                  if s.candidate[key].instruction == prompt.instruction and (s.full is not None or s.minibatch)]
        if scores:
            out.append((prompt.instruction, sum(scores) / len(scores)))
    return out


def auto() -> Mipro:
    """The default: MIPRO's demos and TPE search, its proposer grounded by a GRAD-SUM critique."""
    return Mipro(name="auto", use_critique=True)
