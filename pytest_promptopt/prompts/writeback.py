"""Write an improved prompt back into its file: minimal, comment-preserving and atomic.

Only the fields that changed are touched (the instruction message, the demos and the
`retrieve:` section), comments, key order, encoding (BOM) and newline style survive, and the
file is replaced in one `os.replace` after checking that nobody changed it since it was loaded.
A retrieval pool goes to its sidecar file, written first and restored if the prompt file then
cannot be written, so the two stay consistent.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import io
import itertools
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.events import DocumentEndEvent, DocumentStartEvent, ScalarEvent
from ruamel.yaml.representer import RoundTripRepresenter
from ruamel.yaml.scalarstring import DoubleQuotedScalarString, LiteralScalarString

from . import yaml_edit
from ..atomic import write_atomic
from ..errors import PromptFileError, WriteBackError
from .prompt import (
    MAX_PROMPT_FILE_BYTES,
    Demo,
    Prompt,
    examples_block_template,
    parse_yaml,
    read_demo_list,
    read_prompt_text,
)
from .judgefile import Judge, judge_demos, judge_retrieve_k
from .labels import LabelledCase
from .pool_file import parse_pool_text, read_pool_bytes
from .retrieval import RetrievalRule

try:  # POSIX only; elsewhere concurrent writers are caught by the digest check alone
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

_INDENTS = ((2, 2, 0), (2, 4, 2), (4, 4, 2), (4, 6, 4), (4, 4, 0), (3, 3, 0))
BOM = b"\xef\xbb\xbf"
MAX_POOL_DIFF_LINES = 40


@dataclass(frozen=True)
class PendingWrite:
    """A computed rewrite, applied later in one batch."""

    path: Path  # the real path (symlinks resolved when the prompt was loaded): the file replaced
    expected_digest: str
    new_bytes: bytes
    old_bytes: bytes
    # The retrieval pool's sidecar file, written together with this one. Its expected_digest
    # is "" when the file must not exist yet (a new pool never overwrites a stranger's file).
    sidecar: PendingWrite | None = None
    notes: tuple[str, ...] = ()  # what was changed to make the file fit, said with the diff

    @property
    def changed(self) -> bool:
        return self.new_bytes != self.old_bytes or (self.sidecar is not None and self.sidecar.changed)

    @property
    def paths(self) -> tuple[Path, ...]:
        return (self.path,) if self.sidecar is None else (self.path, self.sidecar.path)

    def diff(self) -> str:
        old = self.old_bytes.decode("utf-8-sig").splitlines(keepends=True)
        new = self.new_bytes.decode("utf-8-sig").splitlines(keepends=True)
        # the real path (a symlink's target), so the header says which file on disk is replaced
        lines = difflib.unified_diff(old, new, str(self.path), f"{self.path} (new)")
        # a last line without a newline is marked as git marks it, so it does not run into the next one
        own = "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)
        if self.sidecar is None:
            return own
        # A pool may hold thousands of entries: its part of the diff is cut, the file says the rest.
        pool = self.sidecar.diff().splitlines(keepends=True)
        if len(pool) > MAX_POOL_DIFF_LINES:
            more = len(pool) - MAX_POOL_DIFF_LINES
            pool = [*pool[:MAX_POOL_DIFF_LINES], f"... {more} more diff lines of {self.sidecar.path.name}\n"]
        return own + "".join(pool)


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
        pending = replace(pending, notes=(note,))
    return pending


def _plan_bytes(original: Prompt, candidate: Prompt) -> PendingWrite:
    path = original.path
    text, data = read_prompt_text(path)
    if hashlib.sha256(data).hexdigest() != original.source_digest:
        raise WriteBackError(
            f"{path}: the file changed on disk since it was loaded; not overwriting it. "
            "Rerun pytest --optimize on the current file."
        )
    if original.kind == "text" and candidate.retrieval is not None:
        raise WriteBackError(f"{path}: retrieved demos need a YAML chat prompt; a .txt/.md template has no "
                             "place to declare them. Convert it to YAML to keep the retrieval rule")
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
    return PendingWrite(path, original.source_digest, new_bytes, data, _plan_pool(original, candidate))


def _plan_pool(original: Prompt, candidate: Prompt) -> PendingWrite | None:
    """The sidecar write for the candidate's pool, if its pool lives in a file and changed."""
    rule = candidate.retrieval
    if rule is None or rule.pool_file is None:
        return None
    before = original.retrieval
    path = original.path.parent / rule.pool_file
    ours = before is not None and before.pool_file == rule.pool_file
    if ours and before is not None and before.pool == rule.pool:
        return None
    try:
        old = read_pool_bytes(path)
    except FileNotFoundError:
        old = b""
    except PromptFileError as exc:
        raise WriteBackError(f"{path}: the pool file cannot be read ({exc.problem}); nothing was written") from None
    expected = original.pool_digest if ours else ""
    if old and hashlib.sha256(old).hexdigest() != expected:
        what = "changed on disk since it was loaded" if ours else "already exists and is not this prompt's pool"
        raise WriteBackError(f"{path}: the pool file {what}; not overwriting it. Move it away or rerun "
                             "pytest --optimize on the current files.")
    text = pool_file_text(original.path.name, rule.pool, old.decode("utf-8-sig", errors="replace"))
    if parse_pool_text(path, text) != rule.pool:  # never write what would not read back the same
        raise WriteBackError(f"{path}: the pool would not read back as written; nothing was written")
    return PendingWrite(path, expected, text.encode("utf-8"), old)


POOL_HEADER = ("# Demo pool of {prompt}: its retrieve section picks the entries most similar to each\n"
               "# call's input as demos. One entry per labelled case, {{inputs, output}}, like demos.\n")


def pool_file_text(prompt_name: str, pool: tuple[Demo, ...], previous: str = "") -> str:
    """A pool sidecar's text: the existing file's leading comment (or a header), then the list."""
    lines = previous.replace("\r\n", "\n").splitlines(keepends=True)
    header = "".join(ln for ln in _leading_comments(lines)) or POOL_HEADER.format(prompt=prompt_name)
    yaml = YAML(typ="rt")
    yaml.width = 1_000_000
    yaml.indent(mapping=2, sequence=2, offset=0)
    out = io.StringIO()
    yaml.dump(_demo_seq(pool), out)
    return header + out.getvalue()


def _leading_comments(lines: list[str]) -> list[str]:
    taken = []
    for line in lines:
        if not line.startswith("#"):
            break
        taken.append(line)
    return taken


def _demo_seq(demos: tuple[Demo, ...]) -> CommentedSeq:
    seq = CommentedSeq()
    for demo in demos:
        item = CommentedMap()
        inputs = CommentedMap((k, _quoted(v)) for k, v in demo.inputs.items())
        inputs.fa.set_flow_style()
        item["inputs"] = inputs
        item["output"] = _quoted(demo.output)
        seq.append(item)
    return seq


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
    """A dumper of new values (demos, a retrieve section) indented as the file is, or as close
    to it as one of the usual indentations comes; it writes no document markers (`---`, `...`):
    what it writes goes inside the document."""
    chosen = _indent_of(text)
    yaml = YAML(typ="rt")
    yaml.width = 1_000_000
    yaml.indent(mapping=chosen.map_indent, sequence=chosen.sequence_indent, offset=chosen.sequence_dash_offset)
    return yaml


def _indent_of(text: str) -> YAML:
    """The round-trip dumper whose indentation reproduces the file, or comes closest to it."""
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
    """The old text with only the changed fields' values replaced (see yaml_edit); the result is
    read back, and the first way of writing the instruction that reads back exactly is kept."""
    root = yaml_edit.compose(text)
    if root is None:
        raise WriteBackError(f"{path}: the file is empty or not a mapping; nothing to write into")
    dumper = _yaml_for(text)
    edits = _demo_edits(text, root, dumper, original, candidate)
    if _rule_key(candidate.retrieval) != _rule_key(original.retrieval):
        edits += _retrieve_edits(text, root, dumper, candidate.retrieval)
    if candidate.instruction == original.instruction:
        return _checked(path, yaml_edit.apply(text, edits), original, candidate)
    key, old = _instruction_node(path, root, original.instruction_index)
    for way in yaml_edit.scalar_texts(old, candidate.instruction, key.start_mark.column, text):
        new_text = yaml_edit.apply(text, [*edits, *yaml_edit.replace_value(text, key, old, way)])
        with contextlib.suppress(WriteBackError):
            return _checked(path, new_text, original, candidate)
    raise WriteBackError(f"{path}: the improved instruction could not be written so that it reads back "
                         "unchanged; nothing was written")


def _instruction_node(path: Path, root: Any, index: int) -> tuple[Any, Any]:
    messages = yaml_edit.entry(root, "messages")
    items = getattr(messages[1], "value", None) if messages else None
    found = yaml_edit.entry(items[index], "content") if isinstance(items, list) and len(items) > index else None
    if found is None:
        raise WriteBackError(f"{path}: messages[{index}].content not found where the prompt was loaded from")
    return found


def _demo_edits(text: str, root: Any, dumper: YAML, original: Prompt, candidate: Prompt) -> list[yaml_edit.Edit]:
    if candidate.demos == original.demos:
        return []
    new = yaml_edit.dumped(dumper, "demos", _demo_seq(candidate.demos), 0)
    found = yaml_edit.entry(root, "demos")
    if found is None:
        return [yaml_edit.add_key(text, yaml_edit.content_end(root, text), 0, "demos", new)]
    return yaml_edit.replace_value(text, *found, new)


def _checked(path: Path, new_text: str, original: Prompt, candidate: Prompt) -> str:
    """Never write a file we could not read back, nor one that reads back as something else."""
    try:
        doc = parse_yaml(path, new_text)  # a plain scalar cannot hold every text (": " in it): try the next way
        instruction = doc["messages"][original.instruction_index]["content"]
        demos = read_demo_list(path, doc["demos"]) if doc.get("demos") else ()
    except (KeyError, IndexError, TypeError, PromptFileError) as exc:
        raise WriteBackError(f"{path}: the rewritten file does not read back ({exc}); nothing was written") from None
    if instruction != candidate.instruction or demos != candidate.demos:
        raise WriteBackError(f"{path}: the rewritten file reads back differently; nothing was written")
    return new_text


def _rule_key(rule: RetrievalRule | None) -> tuple[object, ...] | None:
    return None if rule is None else (rule.identity, rule.pool_file)


def _retrieve_edits(text: str, root: Any, dumper: YAML, rule: RetrievalRule | None) -> list[yaml_edit.Edit]:
    """The `retrieve:` section: its fields replaced in place (its comments kept), the section
    added after the demos, or removed for no rule. Removing it leaves the pool file alone: it
    may hold labelled cases the user wrote."""
    found = yaml_edit.entry(root, "retrieve")
    if rule is None:
        return [] if found is None else [yaml_edit.remove_key(text, *found)]
    fields: dict[str, Any] = {"k": rule.k, "by": rule.by, "order": rule.order,
                              "pool": rule.pool_file if rule.pool_file is not None else _demo_seq(rule.pool)}
    section = found[1] if found is not None else None
    if section is None or not isinstance(section.value, list) or section.flow_style or not section.value:
        if rule.order == "nearest_last":
            del fields["order"]
        new = yaml_edit.dumped(dumper, "retrieve", CommentedMap(fields), 0)
        if found is not None:
            return yaml_edit.replace_value(text, *found, new)
        demos = yaml_edit.entry(root, "demos")
        after = yaml_edit.value_end(text, *demos) if demos else yaml_edit.content_end(root, text)
        return [yaml_edit.add_key(text, after, 0, "retrieve", new)]
    column = section.value[0][0].start_mark.column
    edits = []
    for name, value in fields.items():
        field_found = yaml_edit.entry(section, name)
        if field_found is None:
            if name != "order" or value != "nearest_last":
                edits.append(yaml_edit.add_key(text, yaml_edit.content_end(section, text), column, name,
                                               yaml_edit.dumped(dumper, name, value, column)))
        elif getattr(field_found[1], "value", None) != (str(value) if not isinstance(value, CommentedSeq) else None):
            edits += yaml_edit.replace_value(text, *field_found, yaml_edit.dumped(dumper, name, value, column))
    return edits


def _block_safe(value: str) -> bool:
    """A block scalar (|) reads back exactly only without CRs (YAML turns CRLF into LF)."""
    return "\n" in value and "\r" not in value


def _quoted(value: str) -> Any:
    return LiteralScalarString(value) if _block_safe(value) else DoubleQuotedScalarString(value)


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
    """Replace the file atomically, unless someone changed it since it was loaded.

    With a pool sidecar: both files are checked first, the sidecar is written, then the prompt
    file; if the prompt file cannot be written the sidecar gets its old bytes back (or is
    removed when it is new), so the prompt never names a pool it was not optimized with.
    """
    path = pending.path
    if not pending.changed:
        return
    _check_writable(path)
    with _directory_lock(path.parent):
        _check_unchanged(pending)
        sidecar = pending.sidecar if pending.sidecar is not None and pending.sidecar.changed else None
        if sidecar is not None:
            _check_unchanged(sidecar)
            if sidecar.old_bytes:
                _check_writable(sidecar.path, "pool file")
            write_atomic(sidecar.path, sidecar.new_bytes, like=path)
        try:
            if pending.new_bytes != pending.old_bytes:
                write_atomic(path, pending.new_bytes)
        except BaseException:
            if sidecar is not None:
                _undo(sidecar, like=path)
            raise


def _check_writable(path: Path, what: str = "prompt file") -> None:
    # os.access alone says "writable" to root; no write bit at all is read-only for everyone
    if not os.access(path, os.W_OK) or not os.stat(path).st_mode & 0o222:
        raise WriteBackError(
            f"{path}: the {what} is read-only; the improved prompt was not written. "
            "Make it writable (chmod u+w) and rerun, or use --optimize-dry-run to see the diff."
        )


def _check_unchanged(pending: PendingWrite) -> None:
    try:
        current = pending.path.read_bytes()
    except FileNotFoundError:
        current = None
    if pending.expected_digest == "" and current in (None, b""):  # a new file, still absent
        return
    if current is None or hashlib.sha256(current).hexdigest() != pending.expected_digest:
        raise WriteBackError(
            f"{pending.path}: the file changed on disk during the run (edited by you or another "
            "process); not overwriting it. Rerun pytest --optimize on the current file."
        )


def _undo(sidecar: PendingWrite, like: Path) -> None:
    with contextlib.suppress(OSError):
        if sidecar.old_bytes:
            write_atomic(sidecar.path, sidecar.old_bytes, like=like)
        else:
            sidecar.path.unlink()


def plan_judge_write(judge: Judge, criteria: str, demos: tuple[LabelledCase, ...] | None = None, *,
                     system: str | None = None, retrieve_k: int | None = None) -> PendingWrite:
    """A judge file with its `criteria` (and `demos`, `system`, `retrieve`, when given and
    different) replaced and every other byte kept (comments, other fields, the old value's style
    where it can hold the new text); read back through the judge file's own reader before it is kept."""
    path = judge.path
    demos = judge.demos if demos is None else demos
    system = judge.system if system is None else system
    retrieve_k = judge.retrieve_k if retrieve_k is None else retrieve_k
    old_bytes = path.read_bytes()
    if hashlib.sha256(old_bytes).hexdigest() != judge.source_digest:
        raise WriteBackError(f"{path}: the judge file changed on disk during the run; not overwriting it")
    text = old_bytes.decode("utf-8-sig")
    root = yaml_edit.compose(text)
    found = yaml_edit.entry(root, "criteria") if root is not None else None
    if root is None or found is None:
        raise WriteBackError(f"{path}: no criteria field to write into; nothing was written")
    edits = _judge_demo_edits(text, root, judge, demos) + _judge_retrieve_edits(text, root, judge, retrieve_k)
    key, old = found
    ways = [None] if criteria == judge.criteria else yaml_edit.scalar_texts(old, criteria, key.start_mark.column, text)
    system_ways = [[]] if system == judge.system else _text_key_ways(text, root, "system", system or "")
    for way, system_edits in itertools.product(ways, system_ways):
        criteria_edits = [] if way is None else yaml_edit.replace_value(text, key, old, way)
        new_text = yaml_edit.apply(text, [*edits, *system_edits, *criteria_edits])
        try:
            doc = parse_yaml(path, new_text)
            same = isinstance(doc, dict) and doc.get("criteria") == criteria and doc.get("system") == system and \
                _case_dicts(judge_demos(path, doc)) == _case_dicts(demos) and judge_retrieve_k(path, doc) == retrieve_k
        except PromptFileError:
            continue
        if same:
            prefix = old_bytes[:3] if old_bytes.startswith(BOM) else b""
            return PendingWrite(path, judge.source_digest, prefix + new_text.encode("utf-8"), old_bytes)
    raise WriteBackError(f"{path}: the tuned judge could not be written so that it reads back unchanged; "
                         "nothing was written")


def _text_key_ways(text: str, root: Any, name: str, value: str) -> list[list[yaml_edit.Edit]]:
    """Ways to make the text `value` the value of `name`: in place of the old value, or as a new
    key at the end of the file."""
    found = yaml_edit.entry(root, name)
    if found is not None:
        key, old = found
        return [yaml_edit.replace_value(text, key, old, way)
                for way in yaml_edit.scalar_texts(old, value, key.start_mark.column, text)]
    end = yaml_edit.content_end(root, text)
    return [[yaml_edit.add_key(text, end, 0, name, way)] for way in yaml_edit.scalar_texts(None, value, 0, text)]


def _judge_retrieve_edits(text: str, root: Any, judge: Judge, retrieve_k: int) -> list[yaml_edit.Edit]:
    """The judge file's `retrieve:` set to `{k: N}` (added at the end), or removed for 0."""
    if retrieve_k == judge.retrieve_k:
        return []
    found = yaml_edit.entry(root, "retrieve")
    if not retrieve_k:
        return [] if found is None else [yaml_edit.remove_key(text, *found)]
    value = CommentedMap([("k", retrieve_k)])
    value.fa.set_flow_style()
    new = yaml_edit.dumped(_yaml_for(text), "retrieve", value, 0)
    if found is None:
        return [yaml_edit.add_key(text, yaml_edit.content_end(root, text), 0, "retrieve", new)]
    return yaml_edit.replace_value(text, *found, new)


def _case_dicts(cases: tuple[LabelledCase, ...]) -> list[dict[str, Any]]:
    return [c.to_dict() for c in cases]


def _judge_demo_edits(text: str, root: Any, judge: Judge, demos: tuple[LabelledCase, ...]) -> list[yaml_edit.Edit]:
    """The judge file's `demos:` replaced (or added at the end), each case in the labels' fields."""
    found = yaml_edit.entry(root, "demos")
    if _case_dicts(demos) == _case_dicts(judge.demos):
        return []
    if not demos:
        return [] if found is None else [yaml_edit.remove_key(text, *found)]
    seq = CommentedSeq()
    for case in demos:
        item = CommentedMap()
        for name, value in case.to_dict().items():
            if isinstance(value, dict):
                value = CommentedMap((k, _quoted(v)) for k, v in value.items())
                value.fa.set_flow_style()
            item[name] = _quoted(value) if isinstance(value, str) and name != "verdict" else value
        seq.append(item)
    new = yaml_edit.dumped(_yaml_for(text), "demos", seq, 0)
    if found is None:
        return [yaml_edit.add_key(text, yaml_edit.content_end(root, text), 0, "demos", new)]
    return yaml_edit.replace_value(text, *found, new)
