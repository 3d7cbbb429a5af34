"""MIPRO's joint search: instruction x demo choice per prompt, sampled by Optuna's TPE and
scored on train minibatches, the best minibatch winner scored on every train case every few
trials. optuna is imported only here, when a search runs."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..prompts.prompt import Prompt
from .base import Candidate, OptimizationContext
from .demos import DemoChoice, with_choice
from .search import Evaluator

if TYPE_CHECKING:
    import optuna


@dataclass(frozen=True)
class SearchSpace:
    """Per prompt, the instructions and demo choices a trial picks from (TPE's parameters are
    positions in these tuples, which do not change during a round)."""

    keys: tuple[str, ...]
    instructions: Mapping[str, tuple[Prompt, ...]]
    choices: Mapping[str, tuple[DemoChoice, ...]]

    @property
    def size(self) -> int:
        return math.prod(len(self.instructions[k]) * len(self.choices[k]) for k in self.keys)

    def suggest(self, trial: optuna.Trial) -> tuple[dict[str, int], Candidate]:
        """TPE's next instruction and demo choice per prompt, and the candidate they make."""
        params: dict[str, int] = {}
        candidate: dict[str, Prompt] = {}
        for key in self.keys:
            i = trial.suggest_int(f"instruction:{key}", 0, len(self.instructions[key]) - 1)
            d = trial.suggest_int(f"demos:{key}", 0, len(self.choices[key]) - 1)
            params[f"instruction:{key}"], params[f"demos:{key}"] = i, d
            candidate[key] = with_choice(self.instructions[key][i], self.choices[key][d])
        return params, candidate

    def label(self, round_: int, t: int, params: Mapping[str, int]) -> str:
        return f"mipro r{round_ + 1} t{t + 1} " + " ".join(
            f"{k.rsplit('/', 1)[-1]}:i{params[f'instruction:{k}']}d{params[f'demos:{k}']}" for k in self.keys)


@dataclass(frozen=True)
class TpeSearch:
    ctx: OptimizationContext
    evaluator: Evaluator
    minibatch: int
    full_eval_every: int
    rounds: int

    def run(self, space: SearchSpace, trials: int, round_: int, rng: random.Random,
            warm: dict[str, int] | None) -> dict[str, int]:
        """Run `trials` scored trials of round `round_` (a combination already scored on every
        train case is told to TPE for free and not counted); the best trial's parameters, to
        start the next round from."""
        import optuna  # only an optimization pays for importing it

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = optuna.samplers.TPESampler(seed=self.ctx.seed + round_, n_startup_trials=max(3, trials // 4), multivariate=True)
        study = optuna.create_study(direction="maximize", sampler=sampler)
        if warm:
            study.enqueue_trial(warm, skip_if_exists=True)
        best: tuple[float, dict[str, int]] = (-1.0, {})
        t = asked = 0
        while t < trials and asked < trials + space.size:
            asked += 1
            trial = study.ask()
            params, candidate = space.suggest(trial)
            known = self.evaluator.known_full(candidate)
            if known is None:
                score = self.evaluator.minibatch(candidate, self.minibatch, rng, space.label(round_, t, params))
            study.tell(trial, known if known is not None else score)
            if known is not None:  # scored on every train case already: TPE learns it for free
                best = max(best, (known, params), key=lambda b: b[0])
                continue
            self._after_trial(round_, t, trials, params, score)
            t += 1
            if score > best[0]:
                best = (score, params)
        return best[1]

    def _after_trial(self, round_: int, t: int, trials: int, params: dict[str, int], score: float) -> None:
        self.ctx.log("trial", round=round_, trial=t, params=params, score=score)
        if (t + 1) % self.full_eval_every == 0 and (pending := self.evaluator.best_unvalidated()) is not None:
            self.evaluator.full_train(pending.candidate, pending.label)
        # the progress line adds the one "best train" number (the loop's); a second one here
        # would be over other cases
        self.ctx.progress(f"mipro round {round_ + 1}/{self.rounds} trial {t + 1}/{trials}: minibatch {score:.2f}")


def search_space(keys: Sequence[str], instructions: Mapping[str, Sequence[Prompt]],
                 choices: Mapping[str, Sequence[DemoChoice]]) -> SearchSpace:
    return SearchSpace(tuple(keys), {k: tuple(instructions[k]) for k in keys}, {k: tuple(choices[k]) for k in keys})
