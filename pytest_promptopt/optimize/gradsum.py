"""GRAD-SUM (arXiv 2407.12865): gradients per failed case, summarized into one critique, an
editor writes candidates, beam search over rounds on train minibatches."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import BudgetExhausted, TemplateError
from ..prompts.prompt import Prompt
from .base import Candidate, OptimizationContext, StrategyResult
from .feedback import Feedback
from .proposer import Proposal, Proposer
from .search import Evaluator, sample_ids, successive_halving
from .split import scoring_size


@dataclass
class GradSum:
    name: str = "gradsum"
    beam: int = 3
    rounds: int = 4
    gradients_per_round: int = 6
    edits: int = 3
    minibatch: int = 24

    def estimate_calls(self, n_train: int, n_prompts: int, budget: int | None = None) -> int:
        n_train = scoring_size(n_train)
        batch = min(self.minibatch, n_train)
        per_round = self.gradients_per_round + 1 + (self.edits * n_prompts) + batch * (self.beam + self.edits + 1)
        planned = self.rounds * per_round + n_train * self.beam
        return planned if budget is None else min(planned, budget)  # it stops at the budget

    def run(self, ctx: OptimizationContext) -> StrategyResult:
        proposer = ctx.proposer
        rng = random.Random(ctx.seed)
        evaluator = Evaluator(ctx, on_score=lambda s, split, v: ctx.log("score", candidate=s.label, split=split, score=v))
        beam: list[tuple[Candidate, str]] = [(ctx.original, "original")]
        notes: list[str] = []
        try:
            for round_ in range(self.rounds):
                batch = sample_ids(evaluator.train_ids, self.minibatch, rng)
                scored = successive_halving(evaluator, beam, batch, rungs=1)
                leader = scored[0][0]
                failures = ctx.program.feedback(evaluator.evaluate(leader, batch).results)
                critique = critique_from_failures(proposer, leader, failures, self.gradients_per_round, round_, ctx)
                if not critique:
                    notes.append(f"round {round_ + 1}: no failures or no critique; stopping")
                    break
                new = []
                for key, prompt in leader.items():
                    for proposal in proposer.edit(prompt, critique, self.edits, round_):
                        cand = apply_proposal(leader, key, prompt, proposal, ctx, notes)
                        if cand is not None:
                            new.append((cand, f"gradsum r{round_ + 1} {proposal.kind}"))
                pool = beam + new
                ranked = successive_halving(evaluator, pool, batch, rungs=2 if len(pool) > 2 else 1)
                beam = [(c, evaluator.entry(c).label) for c, _ in ranked[: self.beam]]
                ctx.progress(f"gradsum round {round_ + 1}/{self.rounds}: best minibatch {ranked[0][1]:.2f}")
            for candidate, label in beam:
                evaluator.full_train(candidate, label)
        except BudgetExhausted as exc:
            notes.append(f"stopped early: {exc}")
        best = evaluator.best_full()
        return StrategyResult(best.candidate, best.full or 0.0, tuple(notes), tuple(evaluator.train_ids))


def critique_from_failures(proposer: Proposer, candidate: Candidate, failures: Sequence[Feedback],
                           limit: int, round_: int, ctx: OptimizationContext) -> str:
    """One gradient per failed case, summarized into a single critique."""
    gradients: list[str] = []
    for case in failures[:limit]:
        prompt = candidate.get(case.prompt_key)
        if prompt is None:
            continue
        gradient = proposer.gradient(prompt, case)
        if gradient:
            gradients.append(gradient)
            ctx.log("gradient", round=round_, nodeid=case.nodeid, gradient=gradient)
    if not gradients:
        return ""
    critique = proposer.summarize(gradients, round_) or ""
    ctx.log("critique", round=round_, critique=critique, gradients=len(gradients))
    return critique


def apply_proposal(candidate: Candidate, key: str, prompt: Prompt, proposal: Proposal,
                   ctx: OptimizationContext, notes: list[str]) -> Candidate | None:
    """The candidate with one prompt's instruction replaced, or None if it breaks placeholders."""
    try:
        new_prompt = prompt.with_proposed_instruction(proposal.text)
    except TemplateError as exc:
        notes.append(f"discarded the {proposal.source}'s proposal for {key}: {exc.problem}")
        ctx.log("discarded", prompt=key, reason=exc.problem, text=proposal.text)
        return None
    if new_prompt.instruction == prompt.instruction:
        return None
    ctx.log("proposal", prompt=key, kind=proposal.kind, source=proposal.source, text=proposal.text)
    return {**candidate, key: new_prompt}
