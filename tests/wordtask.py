"""The word-reversal suite the optimizer and reliability round trips share: a scripted model
reverses the word only when the prompt tells it to, so a better prompt really passes more tests."""

from __future__ import annotations

WORDS = ["apple", "banana", "cherry", "delta", "eagle", "falcon", "grape", "hotel", "india", "juliet", "kilo", "lima"]

WORD_PROMPT = """\
# Word task. This comment must survive write-back.
temperature: 0
messages:
  - role: system
    content: Repeat the word.   # the instruction
  - role: user
    content: "{word}"
demos: []
"""

WORD_TESTS = f"""
import pytest
from pytest_promptopt import load_prompt
p = load_prompt("word.yaml")

@pytest.mark.parametrize("word", {WORDS!r})
def test_word(llm, word):
    assert llm(p, word=word) == word[::-1]
"""


def is_optimizer(messages: list[dict[str, str]]) -> bool:
    return messages[0]["content"].startswith("You improve instructions")


def reverse_when_told(proposal: str = "Reverse the word letter by letter."):
    """A scripted model that reverses the word only when the system prompt says "Reverse", and an
    optimizer model that always proposes `proposal`: a better prompt really passes more tests."""

    def respond(messages: list[dict[str, str]], body: dict) -> str:
        if is_optimizer(messages):
            return proposal
        user = messages[-1]["content"]
        return user[::-1] if "Reverse" in messages[0]["content"] else user

    return respond
