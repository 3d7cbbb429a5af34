"""Who answers a call: base URL, model, key and role, and how they appear in messages and keys."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field

from . import redaction
from .redaction import display_url, url_secrets

API_KEY_MARK = "[api key]"


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    model: str
    api_key: str = field(default="", repr=False)
    role: str = "task"
    # The cache key's `served_by`: set for the embedded model (its weights file), else derived
    # from the base URL (see `endpoint_address`).
    identity: str = ""

    def describe(self) -> str:
        return f"model {self.model!r} at {display_url(self.base_url)}"

    def redact(self, text: str) -> str:
        """`text` without the API key or the base URL's credentials and query values."""
        return redaction.redact(redaction.redact(text, [self.api_key], API_KEY_MARK), url_secrets(self.base_url))

    @property
    def served_by(self) -> str:
        return self.identity or endpoint_address(self.base_url)


def endpoint_address(base_url: str) -> str:
    """Who answers, for the cache key: scheme, host, port and path of the base URL, without the
    user, password or query (credentials never go into a key)."""
    parts = urllib.parse.urlsplit(base_url.strip())
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme.lower()}://{(parts.hostname or '').lower()}{port}{parts.path.rstrip('/')}"


def redact(text: str, secret: str) -> str:
    """`text` with the API key replaced by a marker, whatever its length (and any run of its
    first 8 characters, as in "sk-abc123...")."""
    return redaction.redact(text, [secret], API_KEY_MARK)
