"""Write an improved prompt back into its file: minimal, comment-preserving and atomic.

Only the fields that changed are touched (the instruction message and the demos), comments,
key order, encoding (BOM) and newline style survive, and the file is replaced in one
`os.replace` after checking that nobody changed it since it was loaded.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import io
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarstring import DoubleQuotedScalarString, LiteralScalarString

from .errors import WriteBackError
from .prompts import Prompt, examples_block_template, parse_yaml, read_prompt_text

try:  # POSIX only; elsewhere concurrent writers are caught by the digest check alone
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

_INDENTS = ((2, 2, 0), (2, 4, 2), (4, 4, 2), (4, 6, 4), (4, 4, 0), (3, 3, 0))
BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class PendingWrite:
    """A computed rewrite, applied later in one batch."""

    path: Path
    expected_digest: str
    new_bytes: bytes
    old_bytes: bytes

    @property
    def changed(self) -> bool:
        return self.new_bytes != self.old_bytes

    def diff(self) -> str:
        old = self.old_bytes.decode("utf-8-sig").splitlines(keepends=True)
        new = self.new_bytes.decode("utf-8-sig").splitlines(keepends=True)
        lines = difflib.unified_diff(old, new, f"a/{self.path.name}", f"b/{self.path.name}")
        # a last line without a newline is marked as git marks it, so it does not run into the next one
        return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)


def plan_write(original: Prompt, candidate: Prompt) -> PendingWrite:
    """Compute the new file bytes for `candidate`, which was derived from `original`."""
    path = original.path
    text, data = read_prompt_text(path)
    if hashlib.sha256(data).hexdigest() != original.source_digest:
        raise WriteBackError(
            f"{path}: the file changed on disk since it was loaded; not overwriting it. "
            "Rerun pytest --optimize on the current file."
        )
    newline = "\r\n" if "\r\n" in text else "\n"
    normalized = text.replace("\r\n", "\n")
    if original.kind == "text":
        new_text = candidate.instruction
        if candidate.demos:
            new_text = examples_block_template(candidate.demos) + new_text
    else:
        new_text = _rewrite_yaml(path, normalized, original, candidate)
    new_text = new_text.replace("\r\n", "\n")  # a text template keeps the file's CRLF; never double it
    if newline != "\n":
        new_text = new_text.replace("\n", newline)
    new_bytes = new_text.encode("utf-8")
    if data.startswith(BOM):
        new_bytes = BOM + new_bytes
    return PendingWrite(path, original.source_digest, new_bytes, data)


def _yaml_for(text: str) -> YAML:
    """A round-trip dumper whose indentation reproduces the file, or comes closest to it."""
    best: tuple[int, YAML] | None = None
    want = text.rstrip("\n").splitlines()
    for mapping, sequence, offset in _INDENTS:
        yaml = YAML(typ="rt")
        yaml.width = 1_000_000
        yaml.preserve_quotes = True
        yaml.indent(mapping=mapping, sequence=sequence, offset=offset)
        out = io.StringIO()
        yaml.dump(yaml.load(text), out)
        got = out.getvalue().rstrip("\n").splitlines()
        if got == want:
            return yaml
        same = sum(a == b for a, b in zip(got, want))
        if best is None or same > best[0]:
            best = (same, yaml)
    assert best is not None
    return best[1]


def _rewrite_yaml(path: Path, text: str, original: Prompt, candidate: Prompt) -> str:
    yaml = _yaml_for(text)
    doc = yaml.load(text)
    if doc is None:
        raise WriteBackError(f"{path}: the file is empty; nothing to write into")
    if candidate.instruction != original.instruction:
        index = original.instruction_index
        message = doc["messages"][index]
        new_value = _scalar_like(message["content"], candidate.instruction)
        if isinstance(new_value, LiteralScalarString):
            _lift_end_of_line_comment(message, "content")
        message["content"] = new_value
    if candidate.demos != original.demos:
        demos = CommentedSeq()
        for demo in candidate.demos:
            item = CommentedMap()
            inputs = CommentedMap((k, _quoted(v)) for k, v in demo.inputs.items())
            inputs.fa.set_flow_style()
            item["inputs"] = inputs
            item["output"] = _quoted(demo.output)
            demos.append(item)
        if "demos" in doc:
            doc["demos"] = demos
        else:
            doc.insert(len(doc), "demos", demos)
    out = io.StringIO()
    yaml.dump(doc, out)
    new_text = out.getvalue()
    if not text.endswith("\n"):
        new_text = new_text.rstrip("\n")
    parse_yaml(path, new_text)  # never write a file we could not read back
    return new_text


def _lift_end_of_line_comment(mapping: CommentedMap, key: str) -> None:
    """A comment after a one-line value would land inside a block scalar: put it above the key."""
    tokens = mapping.ca.items.get(key)
    comment = tokens[2] if tokens and len(tokens) > 2 else None
    if comment is None or not comment.value.strip().startswith("#"):
        return
    text = comment.value.strip().lstrip("#").strip()
    tokens[2] = None
    column = mapping.lc.key(key)[1] if hasattr(mapping, "lc") else 0
    mapping.yaml_set_comment_before_after_key(key, before=text, indent=column)


def _quoted(value: str) -> Any:
    return LiteralScalarString(value) if "\n" in value else DoubleQuotedScalarString(value)


def _scalar_like(old: Any, new: str) -> Any:
    if isinstance(old, LiteralScalarString) or "\n" in new:
        return LiteralScalarString(new)
    return DoubleQuotedScalarString(new) if isinstance(old, DoubleQuotedScalarString) else new


@contextlib.contextmanager
def _directory_lock(directory: Path) -> Iterator[None]:
    if fcntl is None:
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def apply_write(pending: PendingWrite) -> None:
    """Replace the file atomically, unless someone changed it since it was loaded."""
    path = pending.path
    if not pending.changed:
        return
    # os.access alone says "writable" to root; no write bit at all is read-only for everyone
    if not os.access(path, os.W_OK) or not os.stat(path).st_mode & 0o222:
        raise WriteBackError(
            f"{path}: the prompt file is read-only; the improved prompt was not written. "
            "Make it writable (chmod u+w) and rerun, or use --optimize-dry-run to see the diff."
        )
    with _directory_lock(path.parent):
        current = path.read_bytes()
        if hashlib.sha256(current).hexdigest() != pending.expected_digest:
            raise WriteBackError(
                f"{path}: the file changed on disk during the run (edited by you or another "
                "process); not overwriting it. Rerun pytest --optimize on the current file."
            )
        mode = os.stat(path).st_mode & 0o7777
        tmp: str | None = None
        try:  # an interrupt anywhere in here leaves the old file and no temporary file
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "wb") as handle:
                handle.write(pending.new_bytes)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            raise
        with contextlib.suppress(OSError):
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
