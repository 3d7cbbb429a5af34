"""LM accounting: one type for every count of calls, cache hits, tokens and cost.

A client keeps a running `Usage`; a test's usage per prompt, a prompt's summary and an
optimization's spend per role are all `Usage` values added up or subtracted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class Usage:
    requests: int = 0  # calls asked for, served from the cache or not
    api_calls: int = 0  # calls sent to the endpoint (each retry is not one more)
    cache_hits: int = 0
    retries: int = 0
    errors: int = 0  # calls that failed after every retry
    prompt_tokens: int = 0  # of calls sent to the endpoint, as `cost` (what was paid for)
    completion_tokens: int = 0
    cost: float = 0.0  # of the sent calls: a reply from the cache costs nothing
    lm_seconds: float = 0.0
    cached_tokens: int = 0  # prompt and completion tokens of the replies served from the cache

    @property
    def tokens(self) -> int:
        """Tokens sent and received, the ones `cost` is for (cached replies' are `cached_tokens`)."""
        return self.prompt_tokens + self.completion_tokens

    @property
    def cache_hit_rate(self) -> float:
        return self.cache_hits / self.requests if self.requests else 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def __sub__(self, other: Usage) -> Usage:
        return Usage(*(getattr(self, f.name) - getattr(other, f.name) for f in fields(self)))

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items() if v}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Usage:
        known = {f.name: f.type for f in fields(cls)}
        return cls(**{k: (float(v) if known[k] == "float" else int(v)) for k, v in data.items() if k in known})


def total(usages: Iterable[Usage]) -> Usage:
    out = Usage()
    for u in usages:
        out = out + u
    return out
