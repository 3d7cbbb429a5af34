"""Retrieved demos (dynamic few-shot): per call, the k pool entries most similar to the input.

A prompt may carry a `RetrievalRule`: a pool of labelled demos, how many to show (k), by what
similarity (lexical BM25, needing no model, or cosine over embeddings from the endpoint) and in
which order. Selection is deterministic (same input, same demos, ties broken by pool order), so
the rendered messages, and with them the cache key, are stable from run to run.

Nothing here imports pytest or knows about prompt files; `prompts.py` loads the rule and
renders the chosen demos as chat turns.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import itertools
import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from .demo import Demo

Similarity = Literal["bm25", "embeddings"]
Order = Literal["nearest_last", "nearest_first", "majority_last"]
SIMILARITIES: tuple[str, ...] = ("bm25", "embeddings")
ORDERS: tuple[str, ...] = ("nearest_last", "nearest_first", "majority_last")
MAX_K = 64
# Texts longer than this are cut before tokenizing or embedding: a pool entry or an input of
# megabytes must not stall every call, and the first part of a text carries its topic.
MAX_TEXT_CHARS = 8_000

# Embeds a batch of texts, one vector per text, in order.
Embedder = Callable[[Sequence[str]], Sequence[Sequence[float]]]

# The running session's embeddings (None: no embedding model is set), for
# `prompt.retrieved_demos(variables)` called in a user's test without an embedder: the session's
# runtime registers its own, so the demos shown are the ones its llm() call sends.
_session_embedder: Callable[[], Embedder | None] | None = None


def use_session_embedder(provider: Callable[[], Embedder | None]) -> None:
    global _session_embedder
    _session_embedder = provider


def release_session_embedder(provider: Callable[[], Embedder | None]) -> None:
    """Forget `provider` if it is still the session's (a later session may have replaced it)."""
    global _session_embedder
    if _session_embedder == provider:
        _session_embedder = None


def session_embedder() -> Embedder | None:
    provider = _session_embedder
    return None if provider is None else provider()

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
        self.size = len(documents)
        docs = [Counter(tokenize(d)) for d in documents]
        lengths = [sum(c.values()) for c in docs]
        average = (sum(lengths) / len(docs)) if docs else 0.0
        norms = [k1 * (1 - b + b * length / average) if average else k1 for length in lengths]
        # An inverted index: a call only touches the documents that share a word with it, so a
        # pool of thousands costs about as much per call as the few entries that match.
        self._postings: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for index, counts in enumerate(docs):
            for term, tf in counts.items():
                self._postings[term].append((index, tf * (k1 + 1) / (tf + norms[index])))
        n = len(docs)
        self._idf = {t: math.log(1 + (n - len(p) + 0.5) / (len(p) + 0.5)) for t, p in self._postings.items()}

    def sparse_scores(self, query: str) -> dict[int, float]:
        """Scores of the documents sharing a word with the query (all others score 0); terms
        are added in sorted order, so the floats are the same on every run."""
        scores: dict[int, float] = defaultdict(float)
        for term in sorted(set(tokenize(query)) & self._idf.keys()):
            idf = self._idf[term]
            for index, weight in self._postings[term]:
                scores[index] += idf * weight
        return dict(scores)

    def scores(self, query: str) -> list[float]:
        """One score per document."""
        sparse = self.sparse_scores(query)
        return [sparse.get(i, 0.0) for i in range(self.size)]


@functools.lru_cache(maxsize=8)
def _shared_bm25(texts: tuple[str, ...]) -> BM25:
    """Candidates that differ only in k or order share one index of their common pool."""
    return BM25(texts)


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


def ranked(scores: Mapping[int, float], size: int, excluded: frozenset[int], k: int) -> list[int]:
    """Indexes of the k best of `size` documents, best first, never one of `excluded`.

    Documents missing from `scores` score 0. Equal scores keep pool order, so the choice is
    the same on every run.
    """
    positive = ((i, score) for i, score in scores.items() if score > 0 and i not in excluded)
    chosen = [i for i, _ in heapq.nsmallest(k, positive, key=lambda item: (-item[1], item[0]))]
    if len(chosen) < k:  # then the zeros, in pool order (an input sharing no word with the pool)
        zeros = (i for i in range(size) if scores.get(i, 0.0) == 0.0 and i not in excluded)
        chosen.extend(itertools.islice(zeros, k - len(chosen)))
    if len(chosen) < k:  # then negative similarities (cosine), best first
        negative = sorted((i for i, score in scores.items() if score < 0 and i not in excluded),
                          key=lambda i: (-scores[i], i))
        chosen.extend(negative[: k - len(chosen)])
    return chosen


def majority_last(nearest_last: Sequence[Demo]) -> tuple[Demo, ...]:
    """The demos grouped by answer, the answer most of them share last.

    Few-shot models lean towards the answer they saw most and the one they saw last (majority
    label and recency bias, Zhao et al. 2021, "Calibrate Before Use"); with this order both
    point at the retrieved majority, which makes the demos a nearest-neighbour vote. Groups of
    equal size, and demos within a group, keep their nearest-last order. When no two demos
    share an answer (generation tasks) this is the nearest-last order unchanged.
    """
    votes = Counter(demo.output for demo in nearest_last)
    last_seen = {demo.output: position for position, demo in enumerate(nearest_last)}
    return tuple(sorted(nearest_last, key=lambda demo: (votes[demo.output], last_seen[demo.output])))


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
        return _shared_bm25(self.pool_texts)

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
        query = self.text_of(variables)
        if self.by == "embeddings":
            scores = dict(enumerate(self._cosine_scores(query, embed)))
        else:
            scores = self.bm25.sparse_scores(query)
        best_first = [self.pool[i] for i in ranked(scores, len(self.pool), self._own_entries(variables), self.k)]
        if self.order == "nearest_first":
            return tuple(best_first)
        nearest_last = tuple(reversed(best_first))
        return majority_last(nearest_last) if self.order == "majority_last" else nearest_last

    @cached_property
    def _entries_by_inputs(self) -> dict[tuple[tuple[str, str], ...], list[int]]:
        by_inputs: dict[tuple[tuple[str, str], ...], list[int]] = defaultdict(list)
        for index, demo in enumerate(self.pool):
            if demo.inputs:
                by_inputs[tuple(sorted(demo.inputs.items()))].append(index)
        return dict(by_inputs)

    @cached_property
    def _input_name_sets(self) -> tuple[tuple[str, ...], ...]:
        """The distinct sets of input names in the pool (usually one), sorted."""
        return tuple(sorted({tuple(name for name, _ in key) for key in self._entries_by_inputs}))

    def _own_entries(self, variables: Mapping[str, object]) -> frozenset[int]:
        """Pool entries whose every input equals the call's variable of that name."""
        own: set[int] = set()
        for key in self._input_name_sets:
            if all(name in variables for name in key):
                own.update(self._entries_by_inputs.get(tuple((n, str(variables[n])) for n in key), ()))
        return frozenset(own)

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


__all__ = ["BM25", "Embedder", "RetrievalRule", "cosine", "majority_last", "ranked", "release_session_embedder",
           "session_embedder", "tokenize", "use_session_embedder"]
