"""Secrets out of everything written or printed: API keys, URL credentials and query values.

A secret is redacted whatever its length. Long ones (8+ characters) are also caught by their
first 8 characters, as error bodies often quote a key shortened ("sk-abc123...xyz"); short ones
only where they stand alone (not inside a longer word), so a 2-character password does not
blank every word that contains its letters.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable

MARK = "[redacted]"
_LONG = 8
_WORD = r"A-Za-z0-9"


def url_secrets(url: str) -> tuple[str, ...]:
    """The user name, password and query values of a URL, as written and percent-decoded."""
    try:
        parts = urllib.parse.urlsplit(url.strip())
    except ValueError:
        return ()
    found: list[str] = []
    userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
    for piece in userinfo.split(":", 1) if userinfo else ():
        found.append(piece)
    for pair in re.split(r"[&;]", parts.query):
        value = pair.partition("=")[2]
        found.append(value)
    found.extend([urllib.parse.unquote_plus(s) for s in found])
    return tuple(dict.fromkeys(s for s in found if s))


def display_url(url: str) -> str:
    """The URL with its user name, password and query values replaced by a marker."""
    try:
        parts = urllib.parse.urlsplit(url.strip())
    except ValueError:
        return MARK
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    query = re.sub(r"=([^&;]*)", "=***", parts.query)
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact(text: str, secrets: Iterable[str], mark: str = MARK) -> str:
    """`text` with every secret replaced by `mark` (longest first, so none is half-replaced)."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        if len(secret) >= _LONG:
            text = text.replace(secret, mark)
            text = re.sub(re.escape(secret[:_LONG]) + r"[\w\-.*]*", mark, text)
        else:
            text = re.sub(rf"(?<![{_WORD}]){re.escape(secret)}(?![{_WORD}])", mark, text)
    return text
