"""The optimizer model's jobs: textual gradients, critique summaries, edits, grounded proposals.

Every call goes through the optimizer-role client (cached, budgeted, logged). Proposed text
is only ever parsed as a template (never `str.format`), and a proposal that drops or invents
placeholders is discarded with a note by the caller.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ..llm.client import LMClient
from ..errors import BudgetExhausted, PromptOptError
from ..prompts.prompt import Prompt
from ..prompts.template import escape, reading
from .feedback import Feedback

TIPS = (
    "Be concise: one or two short sentences.",
    "Say exactly what the answer must look like.",
    "List the allowed answers and say to pick exactly one.",
    "Warn against explanations, punctuation or extra words around the answer.",
    "Describe the task as an expert would, then give the answer rule.",
    "Use a short numbered list of rules.",
    "Mention the most common confusion and how to avoid it.",
    "Start with the role: you are a careful classifier / assistant.",
)

SYSTEM = (
    "You improve instructions (prompts) for a language model so that it passes the tests written for it. "
    "Base every change on the evidence shown: the inputs, what the model answered, what the test expected "
    "and why it failed. Keep what works, fix what fails, and never invent facts about the data."
)

# Characters per token when sizing evidence for a context window: English prose runs at about
# four; three leaves room for code, numbers and other languages.
CHARS_PER_TOKEN = 3


@dataclass(frozen=True)
class ProposerLimits:
    """How much the optimizer model is shown and may write. `context_tokens` is the optimizer
    model's context window; half of it is given to evidence, the rest to the instruction, the
    framing and the reply."""

    context_tokens: int
    gradient_tokens: int = 300
    summary_tokens: int = 400
    proposal_tokens: int = 600
    cases_per_proposal: int = 8

    @property
    def evidence_chars(self) -> int:
        return self.context_tokens * CHARS_PER_TOKEN // 2


def fit(fields: Sequence[tuple[str, str]], budget: int) -> str:
    """Labelled fields in full when they fit `budget` characters; otherwise each long field
    is cut to a fair share and says how much was left out."""
    total = sum(len(v) for _, v in fields)
    share = budget if total <= budget else max(200, budget // max(1, len(fields)))
    return "\n\n".join(f"{label}:\n{_cut(value, share)}" for label, value in fields)


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... {len(text) - limit} more characters not shown]"


def describe_case(case: Feedback) -> list[tuple[str, str]]:
    """GEPA's reflective record of one failed case, as labelled fields."""
    inputs = "\n".join(f"{k}: {v}" for k, v in case.inputs.items()) or "(none)"
    fields = [("INPUTS", inputs), ("MODEL OUTPUT", case.output or "(empty)")]
    if case.expected is not None:
        fields.append(("EXPECTED OUTPUT", case.expected))
    fields.append(("WHY THE TEST FAILED", case.message or f"scored {case.score:.2f}"))
    return fields


@dataclass(frozen=True)
class Proposal:
    text: str
    kind: str  # "rewrite" | "augment"
    source: str  # "editor" | "proposer"


def clean_instruction(text: str, limit: int = 2000) -> str:
    """The instruction inside an LM reply: no code fences, labels or wrapping quotes; at most
    `limit` characters (a reply is untrusted input)."""
    text = text.strip()
    # str.find, not a lazy regex: a reply full of unclosed fences must not take quadratic time
    start = text.find("```")
    end = text.find("```", start + 3) if start >= 0 else -1
    if end >= 0:
        inner = text[start + 3:end]
        tag = re.match(r"\w++", inner)  # a language tag right after the fence
        text = inner[tag.end() if tag else 0:].strip()
    text = re.sub(r"^(new |improved |proposed )?(instruction|prompt)\s*:\s*", "", text, flags=re.IGNORECASE)
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text[:limit]


def as_guidance(text: str) -> str:
    """Free text from the model made safe to append to a template (no placeholders)."""
    sentences = re.split(r"(?<=[.!?])\s+", " ".join(text.split()))
    short = " ".join(sentences[:2])[:400]
    return escape(re.sub(r"[{}]", "", short))


class Proposer:
    def __init__(self, client: LMClient, seed: int, log: Callable[..., None], limits: ProposerLimits) -> None:
        self.client = client
        self.seed = seed
        self.log = log
        self.limits = limits
        self.notes: list[str] = []

    def _proposal_room(self, prompt: Prompt) -> tuple[int, int]:
        """Reply tokens and characters a rewrite of `prompt`'s instruction may take: a long
        production instruction must fit whole (twice its size leaves room to grow), within
        half the optimizer model's context."""
        size = len(prompt.instruction)
        tokens = min(max(self.limits.proposal_tokens, 2 * size // CHARS_PER_TOKEN + 100), self.limits.context_tokens // 2)
        return tokens, max(2000, 3 * size)

    def _rewrite(self, prompt: Prompt, user: str, purpose: str, draw: int, source: str) -> Proposal | None:
        """One rewritten instruction, or None when the reply is empty or was cut off by its
        token limit (half an instruction would be scored as if it were one)."""
        tokens, chars = self._proposal_room(prompt)
        reply = self._ask(user, purpose=purpose, draw=draw, max_tokens=tokens, whole=True)
        return Proposal(clean_instruction(reply, chars), "rewrite", source) if reply else None

    def _ask(self, user: str, *, purpose: str, max_tokens: int, draw: int = 0, temperature: float = 0.7,
             whole: bool = False) -> str | None:
        seed = int(hashlib.sha256(f"{self.seed}:{purpose}:{draw}".encode()).hexdigest()[:8], 16)
        request = self.client.request(
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}],
            {"temperature": temperature, "max_tokens": max_tokens, "seed": seed},
        )
        try:
            reply = self.client.complete(request).reply
        except BudgetExhausted:
            raise
        except PromptOptError as exc:
            self.notes.append(f"optimizer model call failed ({purpose}): {exc}")
            self.log("optimizer_error", purpose=purpose, error=str(exc))
            return None
        text = reply.text.strip()
        self.log("optimizer_reply", purpose=purpose, draw=draw, reply=text, finish_reason=reply.finish_reason)
        if whole and reply.finish_reason == "length":
            self.notes.append(f"discarded an optimizer reply cut off at {max_tokens} tokens ({purpose})")
            return None
        return text

    # -- GRAD-SUM --------------------------------------------------------------------------
    def gradient(self, prompt: Prompt, case: Feedback) -> str | None:
        """One textual gradient: how the instruction should change so this failed case passes."""
        evidence = fit([("INSTRUCTION", prompt.instruction_as_read), *describe_case(case)], self.limits.evidence_chars)
        user = (f"{evidence}\n\nWhat in the instruction let this output fail the test, and how should the "
                "instruction change so that cases like this one pass? Be specific; keep what already works.")
        return self._ask(user, purpose=f"gradient:{hashlib.sha256(user.encode()).hexdigest()[:10]}",
                         temperature=0.0, max_tokens=self.limits.gradient_tokens)

    def summarize(self, gradients: Sequence[str], round_: int) -> str | None:
        numbered = [(f"SUGGESTION {i + 1}", g) for i, g in enumerate(gradients)]
        user = (f"Suggestions for improving an instruction, one per failed test:\n\n"
                f"{fit(numbered, self.limits.evidence_chars)}\n\n"
                "Combine them into one general critique that would help on many cases: what to change "
                "and why. Do not mention individual inputs.")
        return self._ask(user, purpose=f"summary:{round_}", temperature=0.0, max_tokens=self.limits.summary_tokens)

    def edit(self, prompt: Prompt, critique: str, n: int, round_: int) -> list[Proposal]:
        user = (f"CURRENT INSTRUCTION:\n{prompt.instruction_as_read}\n\nCRITIQUE:\n{critique}\n\n"
                f"Rewrite the instruction to fix what the critique says. {_keep(prompt)} "
                "Reply with the new instruction only.")
        out: list[Proposal] = []
        for draw in range(n):
            if (proposal := self._rewrite(prompt, user, f"edit:{round_}", draw, "editor")) is not None:
                out.append(proposal)
        if critique:
            out.append(Proposal(prompt.instruction_as_read.rstrip() + "\n" + as_guidance(critique), "augment", "editor"))
        return out

    # -- MIPRO -----------------------------------------------------------------------------
    def data_summary(self, samples: Sequence[Mapping[str, str]]) -> str:
        shown = [(f"INPUT {i + 1}", "\n".join(f"{k}: {v}" for k, v in s.items())) for i, s in enumerate(samples)]
        user = (f"Here are example inputs of a task:\n\n{fit(shown, self.limits.evidence_chars)}\n\n"
                "Describe these inputs: what they are, how they vary, and what makes them hard.")
        return self._ask(user, purpose="data_summary", temperature=0.0, max_tokens=self.limits.summary_tokens) or ""

    def program_summary(self, sources: Sequence[str]) -> str:
        code = [("TEST", s) for s in dict.fromkeys(s for s in sources if s)]
        if not code:
            return ""
        user = (f"This test code checks a language model's answers:\n\n{fit(code, self.limits.evidence_chars)}\n\n"
                "What task does the model do, and exactly what makes an answer pass?")
        return self._ask(user, purpose="program_summary", temperature=0.0, max_tokens=self.limits.summary_tokens) or ""

    def propose(self, prompt: Prompt, *, n: int, data_summary: str, program_summary: str,
                history: Sequence[tuple[str, float]], failures: Sequence[Feedback] = (), critique: str = "",
                round_: int = 0) -> list[Proposal]:
        """New instructions that build on `prompt` (the best so far), grounded in the task, the
        data, the scored history, a critique and the cases it fails."""
        out: list[Proposal] = []
        for draw in range(n):
            tip = TIPS[(self.seed + draw + round_ * n) % len(TIPS)]
            user = self._proposal_request(prompt, data_summary, program_summary, history, failures, critique, tip)
            proposal = self._rewrite(prompt, user, f"propose:{round_}", draw, "proposer")
            if proposal is not None:
                out.append(proposal)
                if draw == 0:
                    out.append(Proposal(prompt.instruction_as_read.rstrip() + "\n" + as_guidance(tip), "augment", "proposer"))
        return out

    def _proposal_request(self, prompt: Prompt, data_summary: str, program_summary: str,
                          history: Sequence[tuple[str, float]], failures: Sequence[Feedback], critique: str,
                          tip: str) -> str:
        scored = [(f"SCORE {s:.2f}", reading(t)) for t, s in sorted(history, key=lambda h: h[1])]
        cases = [(f"FAILED CASE {i + 1}", fit(describe_case(f), self.limits.evidence_chars))
                 for i, f in enumerate(failures[: self.limits.cases_per_proposal])]
        budget = self.limits.evidence_chars
        parts = [text for text in (program_summary and f"TASK (from the tests): {program_summary}",
                                   data_summary and f"DATA: {data_summary}") if text]
        if scored:
            parts.append("INSTRUCTIONS TRIED SO FAR AND THEIR SCORES (higher is better):\n" + fit(scored, budget // 3))
        if critique:
            parts.append(f"CRITIQUE OF THE CURRENT INSTRUCTION:\n{critique}")
        if cases:
            parts.append("CASES THE CURRENT INSTRUCTION FAILS:\n" + fit(cases, budget // 2))
        parts += [f"TIP: {tip}", f"CURRENT INSTRUCTION (the best so far):\n{prompt.instruction_as_read}",
                  f"Write a better instruction. {_keep(prompt)} Reply with the new instruction only."]
        return "\n\n".join(parts)


def _keep(prompt: Prompt) -> str:
    keep = ", ".join("{" + p + "}" for p in sorted(_instruction_placeholders(prompt)))
    return f"Keep these placeholders exactly as written, braces included: {keep}." if keep else "Use no placeholders."


def _instruction_placeholders(prompt: Prompt) -> set[str]:
    return set(prompt.messages[prompt.instruction_index].template.placeholders)
