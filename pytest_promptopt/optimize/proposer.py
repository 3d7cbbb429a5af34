"""The optimizer model's jobs: textual gradients, critique summaries, edits, grounded proposals.

Every call goes through the optimizer-role client (cached, budgeted, logged). Proposed text
is only ever parsed as a template (never `str.format`), and a proposal that drops or invents
placeholders is discarded with a note by the caller.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..client import LMClient
from ..errors import BudgetExhausted, PromptOptError
from ..prompts import Prompt
from ..template import escape

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
    "You improve instructions (prompts) for a small language model so that it passes its tests. "
    "Write plainly. Never invent facts about the data."
)


@dataclass(frozen=True)
class Proposal:
    text: str
    kind: str  # "rewrite" | "augment"
    source: str  # "editor" | "proposer"


def clean_instruction(text: str) -> str:
    """The instruction inside an LM reply: no code fences, labels or wrapping quotes."""
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
    return text[:2000]


def as_guidance(text: str) -> str:
    """Free text from the model made safe to append to a template (no placeholders)."""
    sentences = re.split(r"(?<=[.!?])\s+", " ".join(text.split()))
    short = " ".join(sentences[:2])[:400]
    return escape(re.sub(r"[{}]", "", short))


class Proposer:
    def __init__(self, client: LMClient, seed: int, log: Callable[..., None]) -> None:
        self.client = client
        self.seed = seed
        self.log = log
        self.notes: list[str] = []

    def _ask(self, user: str, *, purpose: str, draw: int = 0, temperature: float = 0.7,
             max_tokens: int = 160) -> str | None:
        seed = int(hashlib.sha256(f"{self.seed}:{purpose}:{draw}".encode()).hexdigest()[:8], 16)
        request = self.client.request(
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}],
            {"temperature": temperature, "max_tokens": max_tokens, "seed": seed},
        )
        try:
            text = self.client.complete(request).text.strip()
        except BudgetExhausted:
            raise
        except PromptOptError as exc:
            self.notes.append(f"optimizer model call failed ({purpose}): {exc}")
            self.log("optimizer_error", purpose=purpose, error=str(exc))
            return None
        self.log("optimizer_reply", purpose=purpose, draw=draw, reply=text)
        return text

    # -- GRAD-SUM --------------------------------------------------------------------------
    def gradient(self, prompt: Prompt, variables: dict[str, str], output: str, failure: str) -> str | None:
        inputs = "\n".join(f"{k}: {v[:300]}" for k, v in variables.items())
        user = (
            f"INSTRUCTION:\n{prompt.instruction}\n\nINPUTS:\n{inputs}\n\nMODEL OUTPUT:\n{output[:500]}\n\n"
            f"WHY THE TEST FAILED:\n{failure[:600]}\n\n"
            "In two sentences: what in the instruction let this output fail, and how should the "
            "instruction change so that cases like this one pass?"
        )
        return self._ask(user, purpose=f"gradient:{hashlib.sha256(user.encode()).hexdigest()[:10]}",
                         temperature=0.0, max_tokens=80)

    def summarize(self, gradients: Sequence[str], round_: int) -> str | None:
        numbered = "\n".join(f"{i + 1}. {g[:400]}" for i, g in enumerate(gradients))
        user = (
            f"Suggestions for improving an instruction, one per failed test:\n{numbered}\n\n"
            "Combine them into one general critique of at most four sentences that would help on "
            "many cases. Do not mention individual inputs."
        )
        return self._ask(user, purpose=f"summary:{round_}", temperature=0.0, max_tokens=120)

    def edit(self, prompt: Prompt, critique: str, n: int, round_: int) -> list[Proposal]:
        keep = ", ".join("{" + p + "}" for p in sorted(_instruction_placeholders(prompt))) or "none"
        user = (
            f"CURRENT INSTRUCTION:\n{prompt.instruction}\n\nCRITIQUE:\n{critique}\n\n"
            f"Rewrite the instruction to fix what the critique says. Keep these placeholders exactly "
            f"as written, braces included: {keep}. Reply with the new instruction only."
        )
        out: list[Proposal] = []
        for draw in range(n):
            reply = self._ask(user, purpose=f"edit:{round_}", draw=draw)
            if reply:
                out.append(Proposal(clean_instruction(reply), "rewrite", "editor"))
        if critique:
            out.append(Proposal(prompt.instruction.rstrip() + "\n" + as_guidance(critique), "augment", "editor"))
        return out

    # -- MIPRO -----------------------------------------------------------------------------
    def data_summary(self, samples: Sequence[dict[str, str]]) -> str:
        shown = "\n".join("- " + "; ".join(f"{k}: {v[:160]}" for k, v in s.items()) for s in samples[:12])
        reply = self._ask(f"Here are example inputs of a task:\n{shown}\n\nDescribe these inputs in two sentences.",
                          purpose="data_summary", temperature=0.0, max_tokens=80)
        return reply or ""

    def program_summary(self, sources: Sequence[str]) -> str:
        code = "\n\n".join(dict.fromkeys(s[:1500] for s in sources if s))[:3000]
        if not code:
            return ""
        reply = self._ask(f"This test code checks a language model's answers:\n{code}\n\n"
                          "In two sentences: what task does the model do, and what makes an answer pass?",
                          purpose="program_summary", temperature=0.0, max_tokens=80)
        return reply or ""

    def propose(self, prompt: Prompt, *, n: int, data_summary: str, program_summary: str,
                history: Sequence[tuple[str, float]], critique: str = "", round_: int = 0) -> list[Proposal]:
        keep = ", ".join("{" + p + "}" for p in sorted(_instruction_placeholders(prompt))) or "none"
        past = "\n".join(f"- score {s:.2f}: {t[:300]}" for t, s in sorted(history, key=lambda h: h[1])[-6:])
        out: list[Proposal] = []
        for draw in range(n):
            tip = TIPS[(self.seed + draw + round_ * n) % len(TIPS)]
            user = (
                f"TASK (from the tests): {program_summary or 'unknown'}\n"
                f"DATA: {data_summary or 'unknown'}\n"
                + (f"PREVIOUS INSTRUCTIONS AND THEIR SCORES (higher is better):\n{past}\n" if past else "")
                + (f"CRITIQUE OF THE CURRENT INSTRUCTION: {critique}\n" if critique else "")
                + f"TIP: {tip}\n\nCURRENT INSTRUCTION:\n{prompt.instruction}\n\n"
                f"Write a better instruction. Keep these placeholders exactly as written, braces "
                f"included: {keep}. Reply with the new instruction only."
            )
            reply = self._ask(user, purpose=f"propose:{round_}", draw=draw)
            if reply:
                out.append(Proposal(clean_instruction(reply), "rewrite", "proposer"))
                if draw == 0:
                    out.append(Proposal(prompt.instruction.rstrip() + "\n" + as_guidance(tip), "augment", "proposer"))
        return out


def _instruction_placeholders(prompt: Prompt) -> set[str]:
    return set(prompt.messages[prompt.instruction_index].template.placeholders)
