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
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .cache import CACHE_FORMAT, RecordMode, ReplyCache
from .endpoint import redact
from ..errors import CacheMissError, EndpointError

if TYPE_CHECKING:
    import openai

BATCH = 64  # texts per request: pools of thousands go out in a few dozen requests, once
MAX_DIMENSIONS = 16_384  # a bound on what we accept from the endpoint (model output is untrusted)


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
    """`embed(texts) -> vectors`, in order; an `Embedder` for `RetrievalRule.select`."""

    def __init__(self, base_url: Callable[[], str], model: str, cache: ReplyCache, *, api_key: str = "",
                 timeout: float = 120.0, retries: int = 4) -> None:
        self._base_url = base_url  # resolved on the first miss: the embedded server starts lazily
        self.model = model
        self.cache = cache
        self._api_key = api_key
        self.timeout = timeout
        self.retries = retries
        self._memory: dict[str, tuple[float, ...]] = {}
        self._lock = threading.Lock()
        self._openai: openai.OpenAI | None = None
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

    def _client(self) -> openai.OpenAI:
        if self._openai is None:
            import openai

            self._openai = openai.OpenAI(base_url=self._base_url(), api_key=self._api_key or "not-needed",
                                         timeout=self.timeout, max_retries=self.retries)
        return self._openai

    def _fetch(self, batch: list[str]) -> list[tuple[float, ...]]:
        import openai

        client = self._client()
        base_url = str(client.base_url)
        self.requests += 1
        try:
            response = client.embeddings.create(model=self.model, input=batch, encoding_format="float")
            data = sorted(response.data, key=lambda d: d.index)
        except openai.APIStatusError as exc:
            raise self._error(base_url, f"HTTP {exc.status_code}: {exc.message}") from None
        except (openai.APIError, ValueError, AttributeError, TypeError) as exc:
            raise self._error(base_url, f"{type(exc).__name__}: {exc}") from None
        vectors = [_checked_vector(getattr(d, "embedding", None)) for d in data]
        if len(vectors) != len(batch) or any(v is None for v in vectors):
            raise self._error(base_url, f"expected {len(batch)} vectors of at most {MAX_DIMENSIONS} finite "
                                     f"numbers, got {len(vectors)} of which {sum(v is None for v in vectors)} unusable")
        return [v for v in vectors if v is not None]

    def _error(self, base_url: str, what: str) -> EndpointError:
        text = redact(" ".join(what.split())[:300], self._api_key)
        return EndpointError(f"embedding call to model {self.model!r} at {base_url} failed: {text}. Check "
                             "--promptopt-embedding-model, or retrieve by: bm25, which needs no model",
                             base_url=base_url, model=self.model, retryable=False)

    def close(self) -> None:
        if self._openai is not None:
            self._openai.close()
