"""Retrieved demos (dynamic few-shot): per call, the k pool entries most similar to the input.

A prompt may carry a `RetrievalRule`: a pool of labelled demos, how many to show (k), by what
similarity (lexical BM25, needing no model, or cosine over embeddings from the endpoint) and in
which order. Selection is deterministic (same input, same demos, ties broken by pool order), so
the rendered messages, and with them the cache key, are stable from run to run.

Nothing here imports pytest or knows about prompt files; `prompts.py` loads the rule and
renders the chosen demos as chat turns.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from .prompts import Demo

Similarity = Literal["bm25", "embeddings"]
Order = Literal["nearest_last", "nearest_first"]
SIMILARITIES: tuple[str, ...] = ("bm25", "embeddings")
ORDERS: tuple[str, ...] = ("nearest_last", "nearest_first")
MAX_K = 64
# Texts longer than this are cut before tokenizing or embedding: a pool entry or an input of
# megabytes must not stall every call, and the first part of a text carries its topic.
MAX_TEXT_CHARS = 8_000

# Embeds a batch of texts, one vector per text, in order.
Embedder = Callable[[Sequence[str]], Sequence[Sequence[float]]]

_TOKEN = re.compile(r"\w+")


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens (letters, digits, underscore; any script)."""
    return _TOKEN.findall(text[:MAX_TEXT_CHARS].casefold())


class BM25:
    """Okapi BM25 over a fixed list of documents (k1 = 1.5, b = 0.75).

    The idf is Lucene's, log(1 + (N - n + 0.5) / (n + 0.5)), which stays positive for terms
    found in most documents, so a shared word never counts against a document.
    """

    def __init__(self, documents: Sequence[str], k1: float = 1.5, b: float = 0.75) -> None:
        self.k1 = k1
        self.b = b
        self._docs = [Counter(tokenize(d)) for d in documents]
        self._lengths = [sum(c.values()) for c in self._docs]
        self._avg_length = (sum(self._lengths) / len(self._docs)) if self._docs else 0.0
        frequency: Counter[str] = Counter()
        for counts in self._docs:
            frequency.update(counts.keys())
        n = len(self._docs)
        self._idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in frequency.items()}

    def scores(self, query: str) -> list[float]:
        """One score per document; terms are summed in sorted order, so floats are reproducible."""
        terms = sorted(set(tokenize(query)) & self._idf.keys())
        out: list[float] = []
        for counts, length in zip(self._docs, self._lengths):
            norm = self.k1 * (1 - self.b + self.b * length / self._avg_length) if self._avg_length else self.k1
            total = 0.0
            for term in terms:
                tf = counts.get(term, 0)
                if tf:
                    total += self._idf[term] * tf * (self.k1 + 1) / (tf + norm)
            out.append(total)
        return out


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


def ranked(scores: Sequence[float], allowed: Sequence[bool], k: int) -> list[int]:
    """Indexes of the k best allowed scores, best first; equal scores keep pool order."""
    order = sorted((i for i in range(len(scores)) if allowed[i]), key=lambda i: (-scores[i], i))
    return order[:k]


@dataclass(frozen=True)
class RetrievalRule:
    """How a prompt picks its retrieved demos.

    `pool_file` is the sidecar file the pool lives in, relative to the prompt's folder, or
    None for a pool written inline in the prompt file.
    """

    pool: tuple[Demo, ...]
    k: int = 4
    by: Similarity = "bm25"
    order: Order = "nearest_last"
    pool_file: str | None = None

    # -- derived ---------------------------------------------------------------------------
    @cached_property
    def input_names(self) -> tuple[str, ...]:
        """The variables the pool's entries are keyed by; only these are compared."""
        return tuple(sorted({name for demo in self.pool for name in demo.inputs}))

    @cached_property
    def pool_texts(self) -> tuple[str, ...]:
        return tuple(self.text_of(demo.inputs) for demo in self.pool)

    @cached_property
    def bm25(self) -> BM25:
        return BM25(self.pool_texts)

    @cached_property
    def identity(self) -> str:
        """A digest of everything that changes which demos a call gets, for candidate identity."""
        blob = json.dumps([self.k, self.by, self.order, [d.to_dict() for d in self.pool]], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def summary(self) -> dict[str, object]:
        """A short description for logs: the rule without the pool's contents."""
        return {"k": self.k, "by": self.by, "order": self.order, "pool": len(self.pool),
                "pool_file": self.pool_file, "identity": self.identity}

    def text_of(self, inputs: Mapping[str, object]) -> str:
        return "\n".join(str(inputs[name]) for name in self.input_names if name in inputs)

    # -- selection -------------------------------------------------------------------------
    def select(self, variables: Mapping[str, object], embed: Embedder | None = None) -> tuple[Demo, ...]:
        """The demos for one call, in render order.

        A pool entry whose inputs equal the call's variables is never offered: a train case
        must not see its own answer as a demo.
        """
        if not self.pool or self.k <= 0:
            return ()
        allowed = [not _same_inputs(demo.inputs, variables) for demo in self.pool]
        query = self.text_of(variables)
        scores = self._cosine_scores(query, embed) if self.by == "embeddings" else self.bm25.scores(query)
        best_first = [self.pool[i] for i in ranked(scores, allowed, self.k)]
        return tuple(reversed(best_first)) if self.order == "nearest_last" else tuple(best_first)

    def _cosine_scores(self, query: str, embed: Embedder | None) -> list[float]:
        if embed is None:
            raise ValueError("retrieval by embeddings needs an embedder")
        # Pool and query go in one batch: the embedder caches per text, so after the first
        # call only the query is new.
        vectors = list(embed([*(t[:MAX_TEXT_CHARS] for t in self.pool_texts), query[:MAX_TEXT_CHARS]]))
        if len(vectors) != len(self.pool) + 1:
            raise ValueError(f"the embedder returned {len(vectors)} vectors for {len(self.pool) + 1} texts")
        target = vectors[-1]
        return [cosine(v, target) for v in vectors[:-1]]


def _same_inputs(inputs: Mapping[str, str], variables: Mapping[str, object]) -> bool:
    return bool(inputs) and all(name in variables and str(variables[name]) == value for name, value in inputs.items())


__all__ = ["BM25", "Embedder", "RetrievalRule", "cosine", "ranked", "tokenize"]
