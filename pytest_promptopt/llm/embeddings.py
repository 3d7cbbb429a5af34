"""Embeddings for retrieved demos: the endpoint's `/v1/embeddings`, cached on disk per text.

Used only when the user sets an embedding model (`--promptopt-embedding-model`) and a prompt
retrieves `by: embeddings`. Every text is embedded once: vectors are kept in memory for the
session and in the reply cache across sessions, under the same record modes as chat calls
(replay never calls the endpoint; a miss there is an error that names the text).
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from .accounting import UsageMeter
from .cache import CACHE_FORMAT, RecordMode, ReplyCache
from .connection import Connection
from .endpoint import Endpoint
from .health import EndpointHealth
from .retries import Retrying
from ..errors import CacheMissError

BATCH = 64  # texts per request: pools of thousands go out in a few dozen requests, once
MAX_DIMENSIONS = 16_384  # a bound on what we accept from the endpoint (model output is untrusted)
_HINT = ". Check --promptopt-embedding-model, or retrieve by: bm25, which needs no model"


def embedding_key(model: str, text: str) -> str:
    blob = json.dumps({"v": CACHE_FORMAT, "kind": "embedding", "model": model, "text": text},
                      sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def vector_from_record(record: Any) -> tuple[float, ...] | None:
    """A stored vector; None for anything this format did not write (then it is fetched again)."""
    if not isinstance(record, dict) or record.get("v") != CACHE_FORMAT or record.get("kind") != "embedding":
        return None
    return _checked_vector(record.get("vector"))


def _checked_vector(raw: Any) -> tuple[float, ...] | None:
    if not isinstance(raw, (list, tuple)) or not 0 < len(raw) <= MAX_DIMENSIONS:
        return None
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in raw):
        return None
    return tuple(float(x) for x in raw)


class EmbeddingClient:
    """`embed(texts) -> vectors`, in order; an `Embedder` for `RetrievalRule.select`. Requests go
    through the same guarded connection as chat calls (`Connection`: the whole-call deadline, the
    reply-size cap, errors without secrets) and the same retries."""

    def __init__(self, base_url: Callable[[], str], model: str, cache: ReplyCache, *, api_key: str = "",
                 timeout: float = 120.0, retries: int = 4, sleep: Callable[[float], None] = time.sleep) -> None:
        self.model = model
        self.cache = cache
        self._memory: dict[str, tuple[float, ...]] = {}
        self._lock = threading.Lock()
        # the base URL is resolved on the first miss: the embedded server starts lazily
        self._connection = Connection(Endpoint("", model, api_key, role="embeddings"), timeout=timeout,
                                      resolve_base_url=base_url, kind="embedding call", hint=_HINT)
        self._retrying = Retrying(EndpointHealth(lambda: self._connection.endpoint), UsageMeter(),
                                  max_retries=retries, concurrency=1, sleep=sleep)
        self.requests = 0  # embedding requests sent to the endpoint (for tests and accounting)

    def __call__(self, texts: Sequence[str]) -> list[tuple[float, ...]]:
        with self._lock:  # one fetch at a time: concurrent calls share the same pool texts
            missing = [t for t in dict.fromkeys(texts) if t not in self._memory]
            unseen = [t for t in missing if not self._from_cache(t)]
            for start in range(0, len(unseen), BATCH):
                batch = unseen[start:start + BATCH]
                for text, vector in zip(batch, self._fetch(batch)):
                    self._memory[text] = vector
                    self._store(text, vector)
            return [self._memory[t] for t in texts]

    def _from_cache(self, text: str) -> bool:
        vector = vector_from_record(self.cache.get_record(embedding_key(self.model, text)))
        if vector is not None:
            self._memory[text] = vector
            return True
        if self.cache.mode is RecordMode.REPLAY:
            raise CacheMissError(f"no recorded embedding (model {self.model!r}) for {text[:80]!r} "
                                 "(--promptopt-record=replay); record it with a normal run first")
        return False

    def _store(self, text: str, vector: tuple[float, ...]) -> None:
        self.cache.put_record(embedding_key(self.model, text),
                              {"v": CACHE_FORMAT, "kind": "embedding", "vector": list(vector)})

    def _fetch(self, batch: list[str]) -> list[tuple[float, ...]]:
        self.requests += 1
        vectors, _ = self._retrying.run(lambda: self._attempt(batch))
        return vectors

    def _attempt(self, batch: list[str]) -> list[tuple[float, ...]]:
        response = self._connection.call(
            lambda client: client.embeddings.create(model=self.model, input=batch, encoding_format="float"),
            self.model)
        try:
            data = sorted(response.data, key=lambda d: d.index)
        except (AttributeError, TypeError) as exc:
            raise self._connection.error(f"bad response: {type(exc).__name__}: {exc}", False,
                                         model=self.model) from None
        vectors = [_checked_vector(getattr(d, "embedding", None)) for d in data]
        if len(vectors) != len(batch) or any(v is None for v in vectors):
            raise self._connection.error(
                f"expected {len(batch)} vectors of at most {MAX_DIMENSIONS} finite numbers, got {len(vectors)} "
                f"of which {sum(v is None for v in vectors)} unusable", False, model=self.model)
        return [v for v in vectors if v is not None]

    def close(self) -> None:
        self._connection.close()
