"""What the optimizer model is shown: the evidence of failed cases in full within a budget
sized to its context, no assumption of a small model, and proposals built on the best
instruction so far."""

from __future__ import annotations

from pathlib import Path

import pytest
from wordtask import WORD_PROMPT, WORD_TESTS, is_optimizer

from pytest_promptopt.llm.cache import ReplyCache
from pytest_promptopt.llm.client import Endpoint, LMClient
from pytest_promptopt.optimize.feedback import Feedback
from pytest_promptopt.optimize.proposer import SYSTEM, Proposer, ProposerLimits
from pytest_promptopt.prompts.prompt import load_prompt
from pytest_promptopt.testing import ScriptedServer

LONG_INPUT = "my card " + "x" * 3000 + " END-OF-INPUT"
LONG_FAILURE = "AssertionError: " + "y" * 1500 + " END-OF-MESSAGE"


def failed_case(prompt_key: str) -> Feedback:
    return Feedback("t::case", prompt_key, {"text": LONG_INPUT}, "refund_not_showing_up", "Refund_not_showing_up",
                    LONG_FAILURE, 0.0)


@pytest.fixture
def recorded(scripted: ScriptedServer) -> list[list[dict[str, str]]]:
    seen: list[list[dict[str, str]]] = []

    def respond(messages: list[dict[str, str]], body: dict) -> str:
        seen.append(messages)
        return "Answer with the label exactly as listed."

    scripted.responder = respond
    return seen


def proposer(scripted: ScriptedServer, tmp_path: Path, context_tokens: int) -> Proposer:
    client = LMClient(Endpoint(scripted.base_url, "optimizer-model", role="optimizer"), ReplyCache(tmp_path / "c"))
    return Proposer(client, 0, lambda *a, **k: None, ProposerLimits(context_tokens))


def intent_prompt(tmp_path: Path):
    path = tmp_path / "intent.txt"
    path.write_text("Classify: {text}\n")
    return load_prompt(path)


def test_a_gradient_request_carries_the_whole_failed_case(scripted: ScriptedServer, recorded: list,
                                                          tmp_path: Path) -> None:
    prompt = intent_prompt(tmp_path)
    assert proposer(scripted, tmp_path, 16_000).gradient(prompt, failed_case(prompt.key))
    (messages,) = recorded
    assert messages[0]["content"] == SYSTEM and "small" not in SYSTEM
    user = messages[1]["content"]
    for part in (LONG_INPUT, "refund_not_showing_up", "EXPECTED OUTPUT:\nRefund_not_showing_up", LONG_FAILURE,
                 "Classify: {text}"):
        assert part in user
    assert "not shown" not in user


def test_evidence_is_cut_to_fit_a_small_context_and_says_so(scripted: ScriptedServer, recorded: list,
                                                            tmp_path: Path) -> None:
    prompt = intent_prompt(tmp_path)
    limits = ProposerLimits(1000)
    assert proposer(scripted, tmp_path, 1000).gradient(prompt, failed_case(prompt.key))
    user = recorded[0][1]["content"]
    assert "END-OF-INPUT" not in user and "more characters not shown]" in user
    assert len(user) < limits.evidence_chars + 1000  # the fields' share plus the framing
    assert "EXPECTED OUTPUT:\nRefund_not_showing_up" in user  # short fields stay whole


def test_proposals_see_failed_cases_and_build_on_the_best_instruction_so_far(
        suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    asked: list[str] = []

    def respond(messages: list[dict[str, str]], body: dict) -> str:
        if is_optimizer(messages):
            asked.append(messages[-1]["content"])
            return "Reverse the word letter by letter."
        user = messages[-1]["content"]
        return user[::-1] if "Reverse" in messages[0]["content"] else user

    scripted.responder = respond
    suite.makefile(".yaml", word=WORD_PROMPT)
    suite.makepyfile(test_word=WORD_TESTS)
    suite.runpytest("--optimize", "--optimize-strategy=mipro", "--optimize-dry-run")
    proposals = [a for a in asked if "Write a better instruction" in a]
    assert len(proposals) >= 2
    first, last = proposals[0], proposals[-1]
    assert "CURRENT INSTRUCTION (the best so far):\nRepeat the word." in first
    assert "CASES THE CURRENT INSTRUCTION FAILS:" in first and "EXPECTED OUTPUT:" in first
    assert "WHY THE TEST FAILED:" in first and "AssertionError" in first
    # the second round builds on the instruction that scored best in the first
    assert "CURRENT INSTRUCTION (the best so far):\nReverse the word letter by letter." in last
    assert "SCORE 1.00:\nReverse the word letter by letter." in last


def test_a_long_instruction_gets_room_for_a_whole_rewrite_and_a_cut_off_reply_is_dropped(
        scripted: ScriptedServer, tmp_path: Path) -> None:
    # A production system prompt of ~6,000 characters: a rewrite must not be cut at a fixed
    # 600 tokens / 2,000 characters, and a reply that hit its token limit is not an instruction.
    long_instruction = "Classify the message. " + "Follow the policy in detail. " * 200 + "Input: {text}"
    path = tmp_path / "long.txt"
    path.write_text(long_instruction + "\n")
    prompt = load_prompt(path)
    rewrite = long_instruction.replace("Classify", "Label")
    bodies: list[dict] = []
    replies = iter([{"content": rewrite}, {"content": rewrite[:3000], "finish_reason": "length"}])

    def respond(messages: list[dict[str, str]], body: dict) -> dict:
        bodies.append(body)
        return next(replies)

    scripted.responder = respond
    ask = proposer(scripted, tmp_path, 16_000)
    (whole,) = [p for p in ask.edit(prompt, "", 1, 0) if p.kind == "rewrite"]
    assert whole.text == rewrite  # all of it, not the first 2,000 characters
    assert bodies[0]["max_tokens"] >= 2 * len(long_instruction) // 3
    assert [p for p in ask.edit(prompt, "", 1, 1) if p.kind == "rewrite"] == []
    assert ask.notes == [f"discarded an optimizer reply cut off at {bodies[1]['max_tokens']} tokens (edit:1)"]
