"""A scripted task model that copies the answer of its most similar demo (the `knn-copy` mode of
`shared/tools/fake_openai.py`, as a `ScriptedServer` responder), and a many-label suite for it.

With it, a prompt is exactly as good as the demos it shows: a case passes when a demo sharing
most words with it carries its label. Copying is all it does, so a candidate whose demos are the
very cases it is scored on looks perfect; the optimizer must not be fooled by that.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from wordtask import is_optimizer

from pytest_promptopt.optimize.loop import split_of

INSTRUCTION = "Classify the message into its queue."


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def nearest_demo_answer(messages: list[dict[str, Any]]) -> str:
    """The assistant turn of the demo whose user turn shares the most words with the last user
    message (the later demo on ties); "unknown" without demos."""
    last = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)
    query = words(messages[last]["content"]) if last >= 0 else set()
    best, best_overlap = "unknown", -1
    for i in range(last - 1):
        if messages[i]["role"] == "user" and messages[i + 1]["role"] == "assistant":
            overlap = len(query & words(messages[i]["content"]))
            if overlap >= best_overlap:
                best, best_overlap = messages[i + 1]["content"].strip(), overlap
    return best


def knn_copy(messages: list[dict[str, Any]], body: dict[str, Any]) -> str:
    """The task model copies its nearest demo; the optimizer model proposes one plain instruction."""
    if is_optimizer(messages):
        return INSTRUCTION
    return nearest_demo_answer(messages)


PROMPT = """\
messages:
  - role: system
    content: Classify the message.
  - role: user
    content: "{text}"
demos: []
"""

def label(i: int) -> str:
    return f"queue{i:02d}"


# Per label: two train messages and one validation message. The first train message shares its
# label's topic word with the second and two common words with every other label's first one;
# the second, the validation and the holdout message share a side word and "charlie". So a first
# message's nearest neighbour is another label's first message, and the other two kinds find
# their own label. A static set of every label's first message passes the second messages (they
# share the topic word with exactly one demo) but none of the held-out ones, which share no word
# with those demos; retrieval from all the train cases passes the second messages and every
# held-out one.
KINDS = {"first": ("train", "topic{i:02d} alpha bravo charlie"), "second": ("train", "topic{i:02d} side{i:02d}"),
         "validation": ("validation", "side{i:02d} golf")}


def holdout_text(i: int) -> str:
    return f"side{i:02d} zulu"


def nodeid(module: str, function: str, message: str, answer: str) -> str:
    return f"{module}::{function}[{message}-{answer}]"


# Per label: two train messages and one validation message that share the label's topic word
# and nothing else, so each message's nearest neighbour is of its own label.
SIMILAR = {"first": ("train", "topic{i:02d}"), "second": ("train", "topic{i:02d}"),
           "validation": ("validation", "topic{i:02d}")}


def labelled_cases(labels: int, module: str, function: str,
                   kinds: Mapping[str, tuple[str, str]] = KINDS) -> list[tuple[str, str]]:
    """(text, label) pairs, per label one of each kind; a word unique to the case (`n07f3` for
    the first kind) is added until the hash split puts the case on its kind's side."""
    cases: list[tuple[str, str]] = []
    for i in range(labels):
        for kind, (split, pattern) in kinds.items():
            variant = 0
            while True:
                message = pattern.format(i=i) + f" n{i:02d}{kind[0]}{variant}"
                if split_of(nodeid(module, function, message, label(i))) == split:
                    break
                variant += 1
            cases.append((message, label(i)))
    return cases


def suite_module(cases: list[tuple[str, str]], holdout: list[tuple[str, str]], function: str = "test_intent") -> str:
    """A test module over `cases` and, marked holdout, `holdout` (as `test_heldout`)."""
    tests = f"""
import pytest
from pytest_promptopt import load_prompt
p = load_prompt("intent.yaml")

@pytest.mark.parametrize("text,label", {cases!r})
def {function}(llm, text, label):
    assert llm(p, text=text) == label
"""
    return tests if not holdout else tests + f"""
@pytest.mark.promptopt(holdout=True)
@pytest.mark.parametrize("text,label", {holdout!r})
def test_heldout(llm, text, label):
    assert llm(p, text=text) == label
"""


def overwhelmed_copy(limit: int):
    """`knn_copy`, for a small model that loses the thread beyond `limit` demos: it then only
    recognizes a demo whose user turn is the input itself (and copies its answer), else
    answers "unknown"."""

    def respond(messages: list[dict[str, Any]], body: dict[str, Any]) -> str:
        if is_optimizer(messages):
            return INSTRUCTION
        demos = [(messages[i]["content"], messages[i + 1]["content"]) for i in range(len(messages) - 2)
                 if messages[i]["role"] == "user" and messages[i + 1]["role"] == "assistant"]
        if len(demos) <= limit:
            return nearest_demo_answer(messages)
        query = messages[-1]["content"]
        return next((answer for user, answer in demos if user == query), "unknown")

    return respond
