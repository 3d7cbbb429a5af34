"""Reading a file a user (or a planted folder) hands us: the one home of the input guards.

Prompt files, pool files, baselines, run logs and every later kind of user file are read here,
so a guard added once covers all of them:

- only a regular file is read: a FIFO would block forever and a device (`/dev/zero`) never ends.
  The file is opened without blocking and checked on the open descriptor, so a file swapped for
  a FIFO between a check and the open cannot block either;
- the size limit is enforced while reading (at most one byte over it), not after a whole read;
- text is UTF-8, a byte-order mark accepted; any other encoding says "save it as UTF-8";
- JSON nested deeper than Python can build is a one-line error, not a RecursionError.

Errors are `UserFileError`s with the file, the problem, the line where known and the fix; each
caller turns them into its own error type (a prompt file error, a baseline error).
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from pathlib import Path
from typing import Any

from .errors import PromptOptError

MAX_JSON_DEPTH = 100  # baselines and logs nest 4-5 levels; deeper is an accident or an attack
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*+"|[\[\]{}]')  # a JSON string, or a bracket


class UserFileError(PromptOptError):
    """A user file cannot be read as the kind of file it should be."""

    def __init__(self, path: Path, problem: str, *, fix: str, line: int | None = None) -> None:
        self.path, self.problem, self.fix, self.line = path, problem, fix, line
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}; fix: {fix}")


def read_bytes(path: Path, *, limit: int, what: str) -> bytes:
    """The bytes of the regular file `path` (`what` names it in errors, e.g. "pool file").

    Raises FileNotFoundError when there is no such file (callers decide whether that is an
    error), and UserFileError for anything else that cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise _not_regular(path, what, "a directory") from None
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a socket, or a FIFO with no writer on some systems
            raise _not_regular(path, what, "a FIFO, device or socket") from None
        raise UserFileError(path, f"the {what} cannot be read ({exc.strerror})",
                            fix="check the path and make the file readable") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise _not_regular(path, what, "a directory")
        if not stat.S_ISREG(mode):
            raise _not_regular(path, what, "a FIFO, device or socket")
        data = _read_fd(fd, limit + 1)  # one byte over: a file that grows while read still ends
    except OSError as exc:
        raise UserFileError(path, f"the {what} cannot be read ({exc.strerror})",
                            fix="check the path and make the file readable") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        size = max(len(data), _size(path))
        raise UserFileError(path, f"the {what} is {size:,} bytes; {what}s are limited to {limit:,}",
                            fix=f"keep the {what} under {limit:,} bytes")
    return data


def _read_fd(fd: int, size: int) -> bytes:
    chunks: list[bytes] = []
    left = size
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def decode_text(path: Path, data: bytes, *, what: str) -> str:
    """UTF-8 text (a byte-order mark is accepted and dropped)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UserFileError(path, f"the {what} is not valid UTF-8 (byte {exc.start})", line=line,
                            fix="save it as UTF-8 (in an editor: save the file as UTF-8, with or without a BOM)") from None


def read_text(path: Path, *, limit: int, what: str) -> tuple[str, bytes]:
    """The file's text and the bytes it was decoded from (for a digest)."""
    data = read_bytes(path, limit=limit, what=what)
    return decode_text(path, data, what=what), data


def parse_json(path: Path, text: str, *, what: str, fix: str) -> Any:
    """JSON text as Python values; too deep or malformed is a UserFileError naming `fix`."""
    if _nesting(text) > MAX_JSON_DEPTH:
        raise UserFileError(path, f"the {what} is nested more than {MAX_JSON_DEPTH} levels deep", fix=fix)
    try:
        return json.loads(text)
    except RecursionError:
        raise UserFileError(path, f"the {what} is nested too deeply to read", fix=fix) from None
    except ValueError as exc:
        raise UserFileError(path, f"the {what} is not valid JSON ({exc})", fix=fix) from None


def _nesting(text: str) -> int:
    """The deepest bracket nesting of JSON text, strings skipped; a scan that needs no recursion."""
    depth = deepest = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif token in "]}":
            depth -= 1
    return deepest


def _not_regular(path: Path, what: str, kind: str) -> UserFileError:
    return UserFileError(path, f"the {what} is {kind}, not a regular file; only regular files are read",
                         fix=f"point to a regular file (a {what} is read whole)")


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


__all__ = ["MAX_JSON_DEPTH", "UserFileError", "decode_text", "parse_json", "read_bytes", "read_text"]
