"""A chat completion's decoded response as a `Reply` (the answer, usage counts and logprobs, each
checked: a response is untrusted input), and `Completion`, a reply as a call got it."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .cache import MAX_TOKEN_COUNT, Reply
from ..errors import EndpointError


@dataclass(frozen=True)
class Completion:
    """A reply as a call got it: from the cache or not, how long it took, attempts and cost."""

    reply: Reply
    cached: bool
    latency_s: float
    attempts: int
    cost: float

    @property
    def text(self) -> str:
        return self.reply.text


def reply_from(response: Any, fail: Callable[..., EndpointError]) -> Reply:
    """The Reply in a decoded response; raises `fail(...)` for one that holds no answer."""
    if isinstance(response, str):  # the client hands back the raw body of a non-JSON content type
        raise fail("the response is not JSON (wrong content type; does the base URL end in the API "
                   f"path, such as /v1?): {short(response, 120)!r}", True)
    choices = getattr(response, "choices", None)
    if not isinstance(choices, list) or not choices:
        raise fail("the response has no choices", True)
    message = getattr(choices[0], "message", None)
    if message is None:
        raise fail("the response's choice has no message", True)
    text = message_text(message)
    if text is None:
        # a well-formed reply without an answer: asking again would get the same, and it
        # says nothing about the endpoint's health (not retried, not counted against it)
        raise fail("the reply has no text, refusal or tool call "
                   f"(finish_reason {getattr(choices[0], 'finish_reason', None)!r})", False)
    usage = getattr(response, "usage", None)
    return Reply(
        clean_text(text),
        token_count(getattr(usage, "prompt_tokens", 0)),
        token_count(getattr(usage, "completion_tokens", 0)),
        clean_text(str(getattr(response, "model", "") or "")),
        clean_text(str(getattr(choices[0], "finish_reason", "") or "")),
        _top_logprobs(choices[0]),
    )


def message_text(message: Any) -> str | None:
    """What the model answered: its text; else its refusal, as written (a refusal is an answer
    the test sees); else its tool calls as JSON; None when the message has none of these."""
    content = getattr(message, "content", None)
    if isinstance(content, str):
        return content
    refusal = getattr(message, "refusal", None)
    if isinstance(refusal, str) and refusal:
        return refusal
    functions = [getattr(call, "function", None) for call in getattr(message, "tool_calls", None) or ()]
    functions.append(getattr(message, "function_call", None))  # the older single-call form
    calls = [_function_call(f) for f in functions if f is not None]
    return json.dumps(calls, ensure_ascii=False) if calls else None


def _function_call(function: Any) -> dict[str, str]:
    return {"name": str(getattr(function, "name", "") or ""), "arguments": str(getattr(function, "arguments", "") or "")}


def clean_text(text: str) -> str:
    """Reply text as it is cached and handed to tests: lone surrogates (which no file or
    terminal can encode) become U+FFFD; proper surrogate pairs become their character."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def token_count(value: Any) -> int:
    """A usage number from the reply; 0 for anything that is not a plausible count (a string,
    a negative or non-finite number): usage is reporting, never a reason to lose an answer."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and 0 <= value <= MAX_TOKEN_COUNT else 0


def _top_logprobs(choice: Any) -> tuple[tuple[str, float], ...]:
    """`choices[0].logprobs.content[0].top_logprobs` as (token, logprob) pairs; () when absent."""
    content = getattr(getattr(choice, "logprobs", None), "content", None)
    if not isinstance(content, list) or not content:
        return ()
    pairs: list[tuple[str, float]] = []
    for item in getattr(content[0], "top_logprobs", None) or ():
        token, logprob = getattr(item, "token", None), getattr(item, "logprob", None)
        if (isinstance(token, str) and isinstance(logprob, (int, float)) and not isinstance(logprob, bool)
                and math.isfinite(logprob)):
            pairs.append((clean_text(token), float(logprob)))
    return tuple(pairs)


def short(text: str, limit: int = 300) -> str:
    """`text` on one line, cut to `limit` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
