"""Safe `{name}` templates.

Templates will be written by language models during optimization, so `str.format` (which
allows attribute access, indexing and format specs) is never used on them. Only plain
identifiers are substituted; `{{` and `}}` are literal braces; everything else is refused
with the file, line and placeholder named.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Union

from ..errors import TemplateError


@dataclass(frozen=True)
class Placeholder:
    name: str


Segment = Union[str, Placeholder]



def from_reading_checked(text: str, names: Iterable[str], origin: TemplateOrigin) -> str:
    """`from_reading`, refused (naming the placeholders) when it drops or invents one."""
    source, lost, added = from_reading(text, names)
    if lost or added:
        raise TemplateError(origin.path, f"proposed instruction changes the placeholders (dropped: {lost or 'none'}, "
                            f"added: {added or 'none'})", field=origin.field,
                            fix="a rewritten instruction must keep exactly the original placeholders")
    return source

@dataclass(frozen=True)
class TemplateOrigin:
    """Where a template came from, for error messages."""

    path: Path | None = None
    field: str | None = None
    first_line: int | None = None  # line of the template's first character in the file

    def line_of(self, source: str, offset: int) -> int | None:
        if self.first_line is None:
            return None
        return self.first_line + source.count("\n", 0, offset)


def _refusal(inner: str) -> tuple[str, str]:
    """Explain why `{inner}` is not a placeholder and how to write it instead."""
    if inner == "":
        return "empty placeholder '{}'", "name the variable, e.g. {text}, or write {{}} for literal braces"
    if inner.isdigit():
        return f"positional placeholder '{{{inner}}}'", "use a named placeholder such as {text}"
    for mark, what in ((".", "attribute access"), ("[", "index access"), ("!", "conversion"), (":", "format spec")):
        if mark in inner:
            head = inner.split(mark, 1)[0]
            name = head if head.isidentifier() else "name"
            return (
                f"{what} in placeholder '{{{inner}}}' is not allowed",
                f"pass the value you need as its own variable and write {{{name}}}; "
                "write {{ and }} for literal braces",
            )
    return (
        f"'{{{inner}}}' is not a placeholder (only plain identifiers are substituted)",
        "use {identifier} for a variable, or {{ and }} for literal braces",
    )


def parse(source: str, origin: TemplateOrigin | None = None) -> tuple[Segment, ...]:
    origin = origin or TemplateOrigin()
    segments: list[Segment] = []
    literal: list[str] = []
    i, n = 0, len(source)
    while i < n:
        ch = source[i]
        if ch == "{":
            if source.startswith("{{", i):
                literal.append("{")
                i += 2
                continue
            end = source.find("}", i + 1)
            nested = source.find("{", i + 1)
            if end == -1 or (nested != -1 and nested < end):
                raise TemplateError(
                    origin.path,
                    f"unbalanced '{{' at character {i + 1} of the template",
                    field=origin.field,
                    line=origin.line_of(source, i),
                    fix="close the placeholder with '}', or write '{{' for a literal brace",
                )
            inner = source[i + 1 : end]
            if not inner.isidentifier():
                problem, fix = _refusal(inner)
                raise TemplateError(
                    origin.path, problem, field=origin.field, line=origin.line_of(source, i), fix=fix
                )
            if literal:
                segments.append("".join(literal))
                literal = []
            segments.append(Placeholder(inner))
            i = end + 1
        elif ch == "}":
            if source.startswith("}}", i):
                literal.append("}")
                i += 2
                continue
            raise TemplateError(
                origin.path,
                f"unbalanced '}}' at character {i + 1} of the template",
                field=origin.field,
                line=origin.line_of(source, i),
                fix="write '}}' for a literal brace",
            )
        else:
            literal.append(ch)
            i += 1
    if literal:
        segments.append("".join(literal))
    return tuple(segments)


def escape(text: str) -> str:
    """Make literal text safe to embed in a template."""
    return text.replace("{", "{{").replace("}", "}}")


NAMED = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")  # `{name}` as a reader sees a placeholder


def reading(source: str) -> str:
    """A template as it reads: literal braces single, placeholders as `{name}`."""
    return "".join(s if isinstance(s, str) else "{" + s.name + "}" for s in parse(source))


def from_reading(text: str, names: Iterable[str]) -> tuple[str, list[str], list[str]]:
    """Template source for `text` written as it reads: each `{name}` of `names` is a
    placeholder, every other brace literal text (escaped). Also the names it leaves out and the
    `{identifier}`s it adds that are not among `names` (placeholders it would invent)."""
    allowed = set(names)
    out: list[str] = []
    found: set[str] = set()
    invented: list[str] = []
    last = 0
    for m in NAMED.finditer(text):
        if m.group(1) not in allowed:
            if m.group(1) not in invented:
                invented.append(m.group(1))
            continue
        out += [escape(text[last:m.start()]), m.group(0)]
        found.add(m.group(1))
        last = m.end()
    out.append(escape(text[last:]))
    return "".join(out), sorted(allowed - found), sorted(invented)


@dataclass(frozen=True)
class Template:
    source: str
    origin: TemplateOrigin = TemplateOrigin()

    @cached_property
    def segments(self) -> tuple[Segment, ...]:
        return parse(self.source, self.origin)

    @cached_property
    def placeholders(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for seg in self.segments:
            if isinstance(seg, Placeholder):
                seen.setdefault(seg.name, None)
        return tuple(seen)

    def _line_of_placeholder(self, name: str) -> int | None:
        """Line of the first `{name}` (not `{{name}}`) in the file, for error messages."""
        match = re.search(r"(?<!\{)\{" + re.escape(name) + r"\}", self.source)
        return self.origin.line_of(self.source, match.start()) if match else None

    def validate(self) -> None:
        self.segments  # noqa: B018 - parsing raises on bad syntax

    def render(self, variables: Mapping[str, object]) -> str:
        out: list[str] = []
        for seg in self.segments:
            if isinstance(seg, Placeholder):
                if seg.name not in variables:
                    raise TemplateError(
                        self.origin.path,
                        f"missing variable {seg.name!r}; received: {sorted(variables) or 'none'}",
                        field=self.origin.field,
                        line=self._line_of_placeholder(seg.name),
                        fix=f"pass {seg.name}=... when calling the prompt",
                    )
                out.append(str(variables[seg.name]))
            else:
                out.append(seg)
        return "".join(out)
