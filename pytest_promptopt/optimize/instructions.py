"""MIPRO's instruction proposals for one prompt: what they are grounded in, the instructions
kept so far, and the history of their scores the proposer sees in later rounds."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from ..prompts.prompt import Prompt
from .base import OptimizationContext
from .feedback import Feedback
from .gradsum import apply_proposal, critique_from_failures
from .search import Evaluator


@dataclass(frozen=True)
class Grounding:
    """What proposals are grounded in: data and program summaries, the train cases the original
    fails (in a seeded order) and, for auto, a GRAD-SUM critique of them."""

    data: str
    program: str
    failures: tuple[Feedback, ...]
    critique: str

    @classmethod
    def gather(cls, ctx: OptimizationContext, summaries: bool, critique_cases: int, use_critique: bool) -> Grounding:
        proposer = ctx.proposer
        data = program = ""
        if summaries:
            data = proposer.data_summary([dict(i) for c in ctx.train[:12] for i in ctx.program.inputs(c.nodeid)[:1]])
            program = proposer.program_summary([ctx.program.source(c.nodeid) for c in ctx.train])
        failed = [c.nodeid for c in ctx.train if not c.passed]
        failures = ctx.program.feedback(ctx.program.evaluate(ctx.original, failed).results)
        random.Random(ctx.seed + 1).shuffle(failures)
        critique = critique_from_failures(proposer, ctx.original, failures, critique_cases, 0, ctx) if use_critique else ""
        return cls(data, program, tuple(failures), critique)


class InstructionPool:
    """The instructions of one prompt the search may choose from: the original first, then
    every distinct proposal kept, each proposal built on the best-scoring instruction so far."""

    def __init__(self, key: str, original: Prompt, original_score: float) -> None:
        self.key = key
        self.prompts: list[Prompt] = [original]
        self.history: list[tuple[str, float]] = [(original.instruction, original_score)]
        self.rewrites = self.rewrites_kept = 0  # the optimizer model's rewrites: proposed, and kept

    def propose(self, ctx: OptimizationContext, grounding: Grounding, n: int, round_: int, notes: list[str]) -> None:
        scores = dict(self.history)
        base = max(self.prompts, key=lambda p: scores.get(p.instruction, -1.0))
        proposals = ctx.proposer.propose(base, n=n, data_summary=grounding.data,
                                         program_summary=grounding.program, history=self.history,
                                         failures=[f for f in grounding.failures if f.prompt_key == self.key],
                                         critique=grounding.critique, round_=round_)
        if grounding.critique and round_ == 0:
            proposals += ctx.proposer.edit(base, grounding.critique, 1, round_)
        for proposal in proposals:
            rewrite = proposal.kind == "rewrite"
            self.rewrites += rewrite
            cand = apply_proposal(ctx.original, self.key, base, proposal, ctx, notes)
            if cand is not None and cand[self.key].instruction not in {p.instruction for p in self.prompts}:
                self.prompts.append(cand[self.key])
                self.rewrites_kept += rewrite

    def nothing_to_search(self, choices: Sequence[object]) -> bool:
        """No demo choice but the prompt's own and no rewritten instruction kept: what is left
        (the original, perhaps with a tip appended) cannot be told apart on cases none pass."""
        return len(choices) <= 1 and self.rewrites_kept == 0

    def rescore(self, evaluator: Evaluator) -> None:
        """The history becomes each instruction's mean score over every configuration that used it."""
        history = []
        for prompt in self.prompts:
            scores = [s.full if s.full is not None else s.mean_minibatch
                      for s in evaluator.scored.values()
                      if s.candidate[self.key].instruction == prompt.instruction and (s.full is not None or s.minibatch)]
            if scores:
                history.append((prompt.instruction, sum(scores) / len(scores)))
        self.history = history


def cannot_start(ctx: OptimizationContext, pools: Sequence[InstructionPool]) -> str:
    """Why the search cannot start, said so that the user knows what would help."""
    passed = sum(c.passed for c in ctx.train)
    rewrites = sum(p.rewrites for p in pools)
    demos = ("no demo can be built: " + ("no train case passes and no expected answer is known" if not passed
             else "the passing cases give no usable demo"))
    proposals = (f"all {rewrites} rewritten instruction(s) the optimizer model proposed were discarded (see the notes)"
                 if rewrites else "the optimizer model proposed no rewritten instruction")
    return (f"cannot start: {demos}, and {proposals}. What would help: a check that names the expected answer "
            "(checks.equals, checks.json_equals, assert out == expected), judge(..., expected=...), a demo pool "
            "(retrieve: pool: in the prompt file), or a stronger optimizer model (--promptopt-optimizer-*)")
