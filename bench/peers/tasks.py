"""The benchmark tasks, shared by the suites (plugin environment) and the peer runners (peers'
virtualenv): starting instruction, how a case's inputs become the user message, and the metric.

Standard library only, so both environments import the same definitions and every contender
is scored by the same function.
"""

from __future__ import annotations

import json
import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

BANKING_LABELS = [
    "age_limit", "cancel_transfer", "card_arrival", "card_not_working", "exchange_rate",
    "lost_or_stolen_card", "pending_cash_withdrawal", "pin_blocked", "Refund_not_showing_up",
    "top_up_failed",
]
IRIS_LABELS = ["setosa", "versicolor", "virginica"]
UNKNOWN = "I don't know"


@dataclass(frozen=True)
class Task:
    name: str
    instruction: str  # the system message of the starting prompt, with {placeholders}
    user: str  # the user message template
    inputs: tuple[str, ...]  # template variables that vary per case (the rest are constant)
    output: str  # the output field's name, for peers that name fields
    max_tokens: int
    constants: tuple[tuple[str, str], ...] = ()

    def system_text(self) -> str:
        """The starting instruction with constant placeholders filled (what peers start from)."""
        text = self.instruction
        for key, value in self.constants:
            text = text.replace("{" + key + "}", value)
        return text

    def user_text(self, inputs: dict[str, str]) -> str:
        text = self.user
        for key in self.inputs:
            text = text.replace("{" + key + "}", inputs[key])
        return text


TASKS: dict[str, Task] = {
    # Identical to examples/banking/prompts/intent.yaml.
    "banking": Task(
        "banking",
        "Classify the customer message into one of: {labels}.\nAnswer with the intent name only.\n",
        "{text}", ("text",), "intent", 16, (("labels", ", ".join(BANKING_LABELS)),),
    ),
    "iris": Task(
        "iris",
        "Classify the iris flower from its measurements into one of: {labels}.\n"
        "Answer with the species name only.\n",
        "{features}", ("features",), "species", 16, (("labels", ", ".join(IRIS_LABELS)),),
    ),
    # The same instruction as examples/qa/prompts/answer.yaml.
    "qa": Task(
        "qa",
        "Answer the question using only the context.\nGive a short answer: a few words, no explanation.\n"
        f"If the context does not contain the answer, reply exactly: {UNKNOWN}\n",
        "Context: {context}\nQuestion: {question}\n", ("context", "question"), "answer", 48,
    ),
}


def exact(output: str, answer: str) -> float:
    return 1.0 if output.strip() == answer else 0.0


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower().replace("don't", "do not"))


def rubric(output: str, answer: str) -> tuple[float, str]:
    """The QA judge: a 0..1 grade with a reason, deterministic.

    An unanswerable question scores 1 only for a reply saying it does not know; otherwise the
    grade is token F1 against the expected answer (SQuAD's metric), and a "don't know" reply to an
    answerable question scores 0.
    """
    says_unknown = "do not know" in " ".join(_tokens(output))
    if answer == UNKNOWN:
        return (1.0, "says it does not know") if says_unknown else (0.0, "answers an unanswerable question")
    if says_unknown:
        return 0.0, "says it does not know, but the context has the answer"
    got, want = _tokens(output), _tokens(answer)
    common = sum(min(got.count(t), want.count(t)) for t in set(want))
    if not got or not common:
        return 0.0, "shares no word with the expected answer"
    precision, recall = common / len(got), common / len(want)
    f1 = 2 * precision * recall / (precision + recall)
    return round(f1, 4), f"token F1 {f1:.2f} (precision {precision:.2f}, recall {recall:.2f})"


def score(task: str, output: str, answer: str) -> float:
    """The metric every contender optimizes and is tested on (0..1 per case)."""
    if task == "qa":
        return rubric(output, answer)[0]
    return exact(output, answer)


def case_marker(task: str, inputs: dict[str, Any]) -> str:
    """A string that appears in every request made to answer this case (for call accounting)."""
    return str(inputs["context"] if task == "qa" else inputs[TASKS[task].inputs[0]])


def run_peer(package: str, run: Callable[[dict[str, Any], dict[str, Any]], None], spec_path: str, out_path: str) -> None:
    """Run one peer on the spec at `spec_path` and write its result to `out_path`; a failure
    becomes the result's `error`, which the bench reports in its table."""
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    out: dict[str, Any] = {"version": f"{package} {metadata.version(package)}", "notes": []}
    try:
        run(spec, out)
    except Exception as exc:  # noqa: BLE001 - any peer failure is a row in the table, with its reason
        out["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        traceback.print_exc()
    Path(out_path).write_text(json.dumps(out), encoding="utf-8")
