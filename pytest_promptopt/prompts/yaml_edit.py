"""Byte-minimal edits of a YAML document: replace the value of a key, add a key, remove a key.

Write-back must change only the fields it replaces: a round trip through a YAML dumper
rewrites what it does not keep (the chomping of `|`, the spaces before an inline comment, line
breaks of long values), so the new file is the old text with a few spans replaced. The spans
come from ruamel's composer, which gives every node its character offsets in the text.
Values are rendered by the caller (a dumper for collections, `scalar_texts` for a string) and
checked by reading the result back; nothing here decides what a field means.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ruamel.yaml import YAML
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode

_BLOCK_HEADER = re.compile(r"[|>][-+0-9]*")


@dataclass(frozen=True)
class Edit:
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Value:
    """A value as text: `head` goes on the key's line after `key: `, `lines` (already indented)
    below it. A block collection has no head; a one-line value has no lines."""

    head: str
    lines: tuple[str, ...] = ()


def compose(text: str) -> MappingNode | None:
    node = YAML(typ="rt").compose(io.StringIO(text))
    return node if isinstance(node, MappingNode) else None


def entry(mapping: MappingNode, key: str) -> tuple[Node, Node] | None:
    for k, v in mapping.value:
        if isinstance(k, ScalarNode) and k.value == key:
            return k, v
    return None


def apply(text: str, edits: Iterable[Edit]) -> str:
    """Apply non-overlapping edits. Insertions at one offset land in the order given."""
    ordered = sorted(enumerate(edits), key=lambda ie: (ie[1].start, ie[1].end, ie[0]), reverse=True)
    for _, e in ordered:
        text = text[:e.start] + e.text + text[e.end:]
    return text


def line_end(text: str, index: int) -> int:
    """The offset of the line break ending the line that holds `index` (or the end of the text)."""
    i = text.find("\n", index)
    return len(text) if i == -1 else i


def content_end(node: Node, text: str) -> int:
    """Where the node's own text ends: the composer's end mark runs on over the blank lines and
    comments that follow a block scalar or a block collection, which belong to no field."""
    if isinstance(node, ScalarNode):
        if node.style in ("|", ">"):
            lines = text[node.start_mark.index:node.end_mark.index].split("\n")
            while len(lines) > 1 and not lines[-1].strip():
                lines.pop()
            return node.start_mark.index + len("\n".join(lines))
        return int(node.end_mark.index)
    if getattr(node, "flow_style", False) or not node.value:
        return int(node.end_mark.index)
    last = node.value[-1]
    return value_end(text, *last) if isinstance(last, tuple) else content_end(last, text)


def is_empty(value: Node) -> bool:
    """`key:` with nothing after it (a null): the composer marks it at the next token."""
    return isinstance(value, ScalarNode) and value.value == "" and value.style is None


def value_end(text: str, key: Node, value: Node) -> int:
    """Where the key's entry ends: its value's end, or the key's own for an empty value."""
    return int(key.end_mark.index) if is_empty(value) else content_end(value, text)


def _after_colon(text: str, key: Node) -> int:
    return text.index(":", key.end_mark.index) + 1


def replace_value(text: str, key: Node, value: Node, new: Value) -> list[Edit]:
    """The edits that make `new` the value of `key`; bytes outside the old value stay."""
    key_line_end = line_end(text, key.end_mark.index)
    end = value_end(text, key, value)
    edits: list[Edit] = []
    if is_empty(value):
        if new.head:
            at = _after_colon(text, key)
            edits.append(Edit(at, at, " " + new.head))
        region = (key_line_end, key_line_end)
    elif value.start_mark.line == key.start_mark.line:
        start = value.start_mark.index
        block_scalar = isinstance(value, ScalarNode) and value.style in ("|", ">")
        head_end = start + len(_BLOCK_HEADER.match(text, start).group()) if block_scalar else end  # type: ignore[union-attr]
        if new.head:
            edits.append(Edit(start, head_end, new.head))
        elif text[head_end:line_end(text, head_end)].strip():  # a comment follows: it keeps its column
            edits.append(Edit(start, head_end, " " * (head_end - start)))
        else:
            edits.append(Edit(_after_colon(text, key), line_end(text, head_end), ""))
        region = (key_line_end, end) if block_scalar else (line_end(text, end), line_end(text, end))
    else:
        if new.head:
            at = _after_colon(text, key)
            edits.append(Edit(at, at, " " + new.head))
        region = (key_line_end, end)
    if region[1] > region[0] or new.lines:
        edits.append(Edit(region[0], region[1], "".join("\n" + line for line in new.lines)))
    return edits


def add_key(text: str, after: int, column: int, key: str, new: Value) -> Edit:
    """A new `key: value` on the lines after the line that holds offset `after`."""
    at = line_end(text, after)
    head = f" {new.head}" if new.head else ""
    return Edit(at, at, f"\n{' ' * column}{key}:{head}" + "".join("\n" + line for line in new.lines))


def remove_key(text: str, key: Node, value: Node) -> Edit:
    """The key's lines, from its line's start to the end of its value (line break included)."""
    start = text.rfind("\n", 0, key.start_mark.index) + 1
    end = line_end(text, value_end(text, key, value))
    return Edit(start, min(len(text), end + 1), "")


def dumped(yaml: YAML, key: str, value: object, column: int) -> Value:
    """`value` rendered by `yaml` as the value of `key` at `column`."""
    out = io.StringIO()
    yaml.dump({key: value}, out)
    first, *rest = out.getvalue().rstrip("\n").split("\n")
    head = first[len(key) + 1:].strip()
    return Value(head, tuple(" " * column + line if line else line for line in rest))


def scalar_texts(old: Node | None, new: str, key_column: int, text: str) -> list[Value]:
    """Ways to write the string `new` where `old` was, in the order they are preferred: the old
    style (a block keeps its indentation and chomping follows the new text, quotes stay
    quotes), then double quotes, which hold any string. The caller keeps the first that reads
    back as `new`."""
    style = getattr(old, "style", None) if isinstance(old, ScalarNode) else None
    ways: list[Value] = []
    if style in ("|", ">") or "\n" in new.rstrip("\n"):
        indent = _block_indent(old, text) if style in ("|", ">") else key_column + 2
        block = _block_scalar(new, ">" if style == ">" and "\n" not in new.rstrip("\n") else "|", indent, key_column)
        if block is not None:
            ways.append(block)
    elif style == "'":
        ways.append(Value("'" + new.replace("'", "''") + "'"))
    elif style is None and new.strip() == new and new:
        ways.append(Value(new))
    ways += [Value(json.dumps(new, ensure_ascii=False)), Value(json.dumps(new))]
    return ways


def _block_indent(old: Node | None, text: str) -> int:
    assert old is not None
    for line in text[old.start_mark.index:old.end_mark.index].split("\n")[1:]:
        if line.strip():
            return len(line) - len(line.lstrip(" "))
    return old.start_mark.column + 2


def _block_scalar(new: str, style: str, indent: int, key_column: int) -> Value | None:
    body = new.rstrip("\n")
    trailing = len(new) - len(body)
    chomp = "-" if trailing == 0 else "" if trailing == 1 else "+"
    lines: Sequence[str] = body.split("\n") + [""] * max(0, trailing - 1)
    digit = ""
    if lines and lines[0].startswith(" "):
        if not 1 <= indent - key_column <= 9:
            return None
        digit = str(indent - key_column)
    return Value(style + chomp + digit, tuple(" " * indent + line if line else "" for line in lines))


__all__ = ["Edit", "Value", "add_key", "apply", "compose", "content_end", "dumped", "entry", "is_empty",
           "remove_key", "replace_value", "scalar_texts", "value_end"]
