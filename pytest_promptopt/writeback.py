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
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.events import DocumentEndEvent, DocumentStartEvent, ScalarEvent
from ruamel.yaml.representer import RoundTripRepresenter
from ruamel.yaml.scalarstring import DoubleQuotedScalarString, LiteralScalarString

from .errors import WriteBackError
from .prompts import MAX_PROMPT_FILE_BYTES, Prompt, examples_block_template, parse_yaml, read_prompt_text

try:  # POSIX only; elsewhere concurrent writers are caught by the digest check alone
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

_INDENTS = ((2, 2, 0), (2, 4, 2), (4, 4, 2), (4, 6, 4), (4, 4, 0), (3, 3, 0))
BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class PendingWrite:
    """A computed rewrite, applied later in one batch."""

    path: Path  # the real path (symlinks resolved when the prompt was loaded): the file replaced
    expected_digest: str
    new_bytes: bytes
    old_bytes: bytes
    notes: tuple[str, ...] = ()  # what was changed to make the file fit, said with the diff

    @property
    def changed(self) -> bool:
        return self.new_bytes != self.old_bytes

    def diff(self) -> str:
        old = self.old_bytes.decode("utf-8-sig").splitlines(keepends=True)
        new = self.new_bytes.decode("utf-8-sig").splitlines(keepends=True)
        # the real path (a symlink's target), so the header says which file on disk is replaced
        return "".join(difflib.unified_diff(old, new, str(self.path), f"{self.path} (new)"))


def plan_write(original: Prompt, candidate: Prompt) -> PendingWrite:
    """Compute the new file bytes for `candidate`, which was derived from `original`. Demos
    that would take the file over the loader's size limit are left out, last first, and a
    note says so: the written file must load on the next run."""
    demos = candidate.demos
    while True:
        pending = _plan_bytes(original, candidate.with_demos(demos))
        if len(pending.new_bytes) <= MAX_PROMPT_FILE_BYTES:
            break
        if not demos or demos == original.demos:
            raise WriteBackError(
                f"{original.path}: the improved prompt would be {len(pending.new_bytes):,} bytes, over the "
                f"{MAX_PROMPT_FILE_BYTES:,}-byte limit for prompt files; not written. "
                "Keep large inputs out of the tests the optimizer learns demos from."
            )
        demos = demos[:-1]
    dropped = len(candidate.demos) - len(demos)
    if dropped:
        note = (f"{dropped} of {len(candidate.demos)} demo(s) left out of {original.path}: with them the file "
                f"would be over the {MAX_PROMPT_FILE_BYTES:,}-byte limit for prompt files (the demos copy each "
                "case's inputs); the validation score was measured with all of them")
        pending = PendingWrite(pending.path, pending.expected_digest, pending.new_bytes, pending.old_bytes, (note,))
    return pending


def _plan_bytes(original: Prompt, candidate: Prompt) -> PendingWrite:
    path = original.path
    text, data = read_prompt_text(path)
    if hashlib.sha256(data).hexdigest() != original.source_digest:
        raise WriteBackError(
            f"{path}: the file changed on disk since it was loaded; not overwriting it. "
            "Rerun pytest --optimize on the current file."
        )
    crlf = "\r\n" in text
    if original.kind == "text":
        new_text = candidate.instruction
        if candidate.demos:
            new_text = examples_block_template(candidate.demos) + new_text
    else:
        new_text = _rewrite_yaml(path, text.replace("\r\n", "\n"), original, candidate)
    if crlf:  # the file's newline style for new lines; a CRLF already there (in the text) stays one
        new_text = re.sub(r"(?<!\r)\n", "\r\n", new_text)
    new_bytes = new_text.encode("utf-8")
    if data.startswith(BOM):
        new_bytes = BOM + new_bytes
    return PendingWrite(path, original.source_digest, new_bytes, data)


class _TildeNullRepresenter(RoundTripRepresenter):
    """Writes a null as `~`, for files that spell it so (ruamel writes an empty value)."""


_TildeNullRepresenter.add_representer(
    type(None), lambda representer, data: representer.represent_scalar("tag:yaml.org,2002:null", "~")
)


@dataclass(frozen=True)
class _DocumentStyle:
    """How the file spells what the round-trip loader does not keep: `~` nulls, `---` and `...`."""

    tilde_nulls: bool
    explicit_start: bool
    explicit_end: bool

    @classmethod
    def of(cls, text: str) -> _DocumentStyle:
        events = list(YAML(typ="rt").parse(io.StringIO(text)))
        return cls(
            any(isinstance(e, ScalarEvent) and e.style is None and e.value == "~" for e in events),
            any(isinstance(e, DocumentStartEvent) and e.explicit for e in events),
            any(isinstance(e, DocumentEndEvent) and e.explicit for e in events),
        )

    def dumper(self) -> YAML:
        yaml = YAML(typ="rt")
        if self.tilde_nulls:
            yaml.Representer = _TildeNullRepresenter
        yaml.explicit_start = self.explicit_start or None
        yaml.explicit_end = self.explicit_end or None
        return yaml


def _yaml_for(text: str) -> YAML:
    """A round-trip dumper whose indentation reproduces the file, or comes closest to it."""
    best: tuple[int, YAML] | None = None
    want = text.rstrip("\n").splitlines()
    style = _DocumentStyle.of(text)
    for mapping, sequence, offset in _INDENTS:
        yaml = style.dumper()
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


def _block_safe(value: str) -> bool:
    """A block scalar (|) reads back exactly only without CRs (YAML turns CRLF into LF)."""
    return "\n" in value and "\r" not in value


def _quoted(value: str) -> Any:
    return LiteralScalarString(value) if _block_safe(value) else DoubleQuotedScalarString(value)


def _scalar_like(old: Any, new: str) -> Any:
    if "\r" in new:
        return DoubleQuotedScalarString(new)  # escaped as \r\n: the text reads back unchanged
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


def _remove_leftovers(path: Path) -> None:
    """Temporary files of an earlier write killed mid-way (SIGKILL, power loss). Called under the
    directory lock, so no write of ours is using them."""
    for leftover in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
        with contextlib.suppress(OSError):
            leftover.unlink()


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _copy_ownership(path: Path, tmp: str, before: os.stat_result) -> None:
    """The new file gets the old one's mode, and its owner, group and extended attributes
    where this process may set them (root may; others keep their own)."""
    os.chmod(tmp, before.st_mode & 0o7777)
    with contextlib.suppress(OSError):
        os.chown(tmp, before.st_uid, before.st_gid)
    with contextlib.suppress(OSError):
        os.chmod(tmp, before.st_mode & 0o7777)  # chown clears setuid/setgid bits: set them again
    for name in _xattrs(path):
        with contextlib.suppress(OSError):
            os.setxattr(tmp, name, os.getxattr(path, name))


def _xattrs(path: Path) -> list[str]:
    try:
        return os.listxattr(path) if hasattr(os, "listxattr") else []
    except OSError:
        return []


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
        _remove_leftovers(path)
        before = os.stat(path)
        tmp: str | None = None
        try:  # an interrupt anywhere in here leaves the old file and no temporary file
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "wb") as handle:
                handle.write(pending.new_bytes)
                handle.flush()
                os.fsync(handle.fileno())
            _copy_ownership(path, tmp, before)
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
