"""A few-shot example, shared by prompt files, retrieval pools and the optimizer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Demo:
    """One few-shot example: the variables that differ from case to case, and the answer."""

    inputs: Mapping[str, str]
    output: str

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": dict(self.inputs), "output": self.output}
