"""What a test's LM calls were made of, so the next run can send them ahead of the test.

Each `llm()` and `judge()` call of a test run is noted as a `RecordedCall`: the prompt file (or
the judge's criteria), the inputs and the sample index. An input that is exactly the output of
an earlier call of the same test is noted as a reference to that call, so a dependent call can
be predicted once the call it depends on has its new answer; an input computed from an earlier
output in some other way (`out.strip()`, an f-string around it) cannot be predicted and is
marked so: that call is left to the test. The log never holds replies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

LOG_FORMAT = 1
LLM, JUDGE = "llm", "judge"
_MIN_DERIVED = 4  # a shorter input that happens to be a word of an earlier output is not derived from it


@dataclass(frozen=True)
class Value:
    """One recorded input: literal text, the output of earlier call `output_of`, or `derived`
    from an earlier output in a way that cannot be replayed."""

    text: str = ""
    output_of: int | None = None
    derived: bool = False

    def to_dict(self) -> dict[str, Any]:
        if self.output_of is not None:
            return {"output_of": self.output_of}
        return {"derived": True} if self.derived else {"text": self.text}

    @classmethod
    def from_dict(cls, data: Any) -> Value:
        if not isinstance(data, Mapping):
            raise TypeError("an input is not an object")
        if "output_of" in data:
            index = data["output_of"]
            if not isinstance(index, int) or isinstance(index, bool) or index < 0:
                raise TypeError("output_of is not a call index")
            return cls(output_of=index)
        if data.get("derived") is True:
            return cls(derived=True)
        text = data.get("text")
        if not isinstance(text, str):
            raise TypeError("an input has no text")
        return cls(text)


@dataclass(frozen=True)
class RecordedCall:
    """`llm(prompt, **inputs)` (kind llm) or `judge(output, criteria, expected=...)` (kind
    judge, `mode` score or yesno, `prompt` empty)."""

    kind: str
    prompt: str
    inputs: Mapping[str, Value]
    sample: int = 0
    mode: str = ""

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind, "inputs": {k: v.to_dict() for k, v in self.inputs.items()}}
        if self.prompt:
            data["prompt"] = self.prompt
        if self.sample:
            data["sample"] = self.sample
        if self.mode:
            data["mode"] = self.mode
        return data

    @classmethod
    def from_dict(cls, data: Any) -> RecordedCall:
        if not isinstance(data, Mapping) or data.get("kind") not in (LLM, JUDGE):
            raise TypeError("a call has no known kind")
        inputs = data.get("inputs", {})
        sample, prompt, mode = data.get("sample", 0), data.get("prompt", ""), data.get("mode", "")
        if not isinstance(inputs, Mapping) or not isinstance(sample, int) or isinstance(sample, bool):
            raise TypeError("a call's inputs or sample are malformed")
        if not isinstance(prompt, str) or not isinstance(mode, str):
            raise TypeError("a call's prompt or mode is not text")
        return cls(data["kind"], prompt, {str(k): Value.from_dict(v) for k, v in inputs.items()}, sample, mode)


def encode_calls(calls: list[RecordedCall]) -> dict[str, Any]:
    return {"v": LOG_FORMAT, "calls": [c.to_dict() for c in calls]}


def decode_calls(data: Any) -> tuple[RecordedCall, ...] | None:
    """The calls of a stored log; None for anything this format did not write (a miss: the test
    simply runs its calls inline and writes a new log)."""
    if not isinstance(data, Mapping) or data.get("v") != LOG_FORMAT or not isinstance(data.get("calls"), list):
        return None
    try:
        calls = tuple(RecordedCall.from_dict(c) for c in data["calls"])
    except (ValueError, TypeError, KeyError):
        return None
    for i, call in enumerate(calls):  # a reference points back, never forward (no cycles)
        if any(v.output_of is not None and v.output_of >= i for v in call.inputs.values()):
            return None
    return calls


@dataclass
class CallLog:
    """The calls of one test run, in order, with the outputs seen so far (mutable during the run)."""

    calls: list[RecordedCall] = field(default_factory=list)
    outputs: list[str | None] = field(default_factory=list)

    def begin(self, kind: str, prompt: str, inputs: Mapping[str, Any], *, sample: int = 0, mode: str = "") -> int:
        """Note a call before it is made (a call that then fails is still predicted next time)."""
        values = {name: self.value(text) for name, text in inputs.items()}
        self.calls.append(RecordedCall(kind, prompt, values, sample, mode))
        self.outputs.append(None)
        return len(self.calls) - 1

    def done(self, index: int, output: str) -> None:
        self.outputs[index] = output

    def value(self, raw: Any) -> Value:
        text = str(raw)  # prompts render str(value): the recorded text renders the same
        for i in range(len(self.outputs) - 1, -1, -1):
            output = self.outputs[i]
            if output is None:
                continue
            if text == output:
                return Value(output_of=i)
            if _derived(text, output):
                return Value(derived=True)
        return Value(text)


def _derived(text: str, output: str) -> bool:
    """`text` was plausibly computed from `output`: it contains it, or is a long part of it."""
    inner, part = output.strip(), text.strip()
    if inner and inner in text:
        return True
    return len(part) >= _MIN_DERIVED and part in output
