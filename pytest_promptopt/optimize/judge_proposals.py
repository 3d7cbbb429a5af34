"""What the optimizer model is asked when a judge is tuned: criteria rewrites and template rewrites.

Both are shown the same evidence: the judge's disagreements with the humans on train labels, each
with the output, both verdicts, the expected answer and the human's note. A criteria rewrite
replaces what the judge checks; a template rewrite replaces how it is told to grade (its system
prompt), and always keeps the lines that say the output is data and what the answer looks like.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import PromptOptError
from ..llm.client import LMClient
from ..prompts.judgefile import Judge
from ..prompts.labels import LabelledCase
from .proposer import clean_instruction, fit

MAX_EVIDENCE_CASES = 8
REWRITE_SYSTEM = (
    "You improve the criteria of an LLM judge so that its pass/fail verdicts agree with human labels. "
    "You are shown the current criteria and cases where the judge and the human disagreed, with the human's "
    "note on why. Write new criteria: one short paragraph a grader can apply to any case, not a list of the "
    "cases. Reply with the criteria only."
)
TEMPLATE_SYSTEM = (
    "You improve the instructions (the system prompt) of an LLM judge so that its pass/fail verdicts agree "
    "with human labels. You are shown the current instructions, the criteria the judge applies with them, and "
    "cases where the judge and the human disagreed, with the human's note on why. Write new instructions: a "
    "few sentences on how the grader should read a case and decide, for any case, not a list of the cases; do "
    "not restate the criteria. Reply with the instructions only."
)


@dataclass(frozen=True)
class Disagreement:
    case: LabelledCase
    human_passes: bool
    judge_score: float | None


def evidence_text(disagreements: Sequence[Disagreement], train_size: int) -> str:
    """The judge's train disagreements as the optimizer model reads them (the first few)."""
    shown = []
    for n, d in enumerate(disagreements[:MAX_EVIDENCE_CASES], start=1):
        fields = [("output", d.case.output), ("human verdict", "pass" if d.human_passes else "fail"),
                  ("judge verdict", f"{'fail' if d.human_passes else 'pass'} (score {d.judge_score})")]
        fields += [("expected", d.case.expected)] if d.case.expected else []
        fields += [("human's note", d.case.note)] if d.case.note else []
        shown.append(f"Case {n}:\n" + fit(fields, 1200))
    return (f"{len(disagreements)} of {train_size} training cases disagree with the humans.\n\n"
            + "\n\n".join(shown))


class JudgeProposer:
    """Asks the optimizer model (`client`) for rewrites; `seed` varies the draws of a run."""

    def __init__(self, client: LMClient, seed: int, log: Callable[[str], None]) -> None:
        self.client, self.seed, self.log = client, seed, log

    def criteria(self, judge: Judge, threshold: float, evidence: str, count: int) -> list[str]:
        user = (f"CURRENT CRITERIA:\n{judge.criteria}\n\nThe judge passes at score {threshold:g}. {evidence}"
                "\n\nWrite the new criteria now.")
        return self._draw(REWRITE_SYSTEM, user, f"judge:{judge.name}", count, {judge.criteria})

    def template(self, judge: Judge, current_system: str, evidence: str, count: int) -> list[str]:
        user = (f"CURRENT INSTRUCTIONS:\n{current_system}\n\nCRITERIA THEY ARE USED WITH:\n{judge.criteria}\n\n"
                f"{evidence}\n\nWrite the new instructions now.")
        return self._draw(TEMPLATE_SYSTEM, user, f"judge-template:{judge.name}", count, {current_system})

    def _draw(self, system: str, user: str, key: str, count: int, old: set[str]) -> list[str]:
        out: list[str] = []
        for draw in range(count):
            # seed 0 keeps the draws earlier runs made (and cached)
            salt = f"{key}:{draw}" if self.seed == 0 else f"{key}:{self.seed}:{draw}"
            seed = int(hashlib.sha256(salt.encode()).hexdigest()[:8], 16)
            request = self.client.request([{"role": "system", "content": system}, {"role": "user", "content": user}],
                                          {"temperature": 0.7, "max_tokens": 300, "seed": seed})
            try:
                text = clean_instruction(self.client.complete(request).text, 1500)
            except PromptOptError as exc:
                self.log(f"optimizer model call failed: {exc}")
                continue
            if text and text not in old and text not in out:
                out.append(text)
        return out


__all__ = ["REWRITE_SYSTEM", "TEMPLATE_SYSTEM", "Disagreement", "JudgeProposer", "evidence_text"]
