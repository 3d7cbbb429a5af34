"""Pool files: the demo list a prompt's `retrieve: {pool: <name>.pool.yaml}` names.

A pool holds many labelled cases (10,000 entries are normal), so it is read in one pass of a
safe YAML event parser (libyaml's when installed) that builds plain lists, dicts and strings:
no round-trip loader (a pool is never edited in place; write-back writes it whole), no second
parse. Parsed pools are kept per (path, digest), so every `load_prompt` / `llm("path")` of a
session after the first costs one guarded read and a hash.

The guards are those of prompt files (`userfiles.py`: regular file, size checked while reading,
UTF-8) and of their YAML (no aliases, bounded nesting), and every value must be text: a plain
`1.10`, `true`, `null` or `0x1F` would reach the model as Python's rendering of a number or a
boolean, so it is refused with the file, the line and "quote it".
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml.nodes import ScalarNode
from ruamel.yaml.resolver import VersionedResolver

from ..errors import PromptFileError
from ..userfiles import UserFileError, decode_text, read_bytes
from .demo import Demo

MAX_POOL_FILE_BYTES = 10_000_000  # a pool sidecar holds many labelled cases; still bounded
MAX_POOL_DEPTH = 50  # a pool nests 3 levels; deeper is an accident or an attack
YAML_SUFFIXES = (".yaml", ".yml")
DEMO_SHAPE = "each demo must be {inputs: {name: value}, output: text}"
_PARSED_KEEP = 32  # pools kept parsed per process (by path and digest)
_STR = "tag:yaml.org,2002:str"
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when installed: ~10x faster
_resolver = VersionedResolver(version=(1, 2))  # the YAML 1.2 rules the prompt files' loader uses
_parsed: OrderedDict[tuple[Path, str], tuple[Demo, ...]] = OrderedDict()
_parsed_lock = threading.Lock()


def check_pool_name(path: Path, name: str, line: int | None = None) -> None:
    """Pool files live beside the prompt (or below its folder), so write-back stays in the project."""
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts or relative.suffix.lower() not in YAML_SUFFIXES:
        raise PromptFileError(path, f"pool file {name!r} must be a .yaml/.yml file in the prompt's folder "
                                    "(or below it)", field="retrieve.pool", line=line,
                              fix=f"write pool: {path.stem}.pool.yaml")


def read_pool_bytes(pool_path: Path) -> bytes:
    """The pool file's bytes, with the user-file guards; FileNotFoundError when it is missing."""
    try:
        return read_bytes(pool_path, limit=MAX_POOL_FILE_BYTES, what="pool file")
    except UserFileError as exc:
        raise PromptFileError(pool_path, exc.problem, line=exc.line,
                              fix=exc.fix if "limited" not in exc.problem
                              else "keep fewer, shorter demos in the pool") from None


def load_pool_file(path: Path, name: str, line: int | None) -> tuple[tuple[Demo, ...], str]:
    """The demos of prompt `path`'s pool file `name`, and the sha256 of its bytes."""
    check_pool_name(path, name, line)
    pool_path = path.parent / name
    try:
        data = read_pool_bytes(pool_path)
    except FileNotFoundError:
        raise PromptFileError(path, f"pool file {name!r} not found (looked for {pool_path})", field="retrieve.pool",
                              line=line, fix="create it with a list of {inputs: {...}, output: ...} entries, "
                                             "or fix the name") from None
    digest = hashlib.sha256(data).hexdigest()
    key = (pool_path, digest)
    with _parsed_lock:
        if key in _parsed:
            _parsed.move_to_end(key)
            return _parsed[key], digest
    try:
        text = decode_text(pool_path, data, what="pool file")
    except UserFileError as exc:
        raise PromptFileError(pool_path, exc.problem, line=exc.line, fix=exc.fix) from None
    demos = parse_pool_text(pool_path, text)
    with _parsed_lock:
        _parsed[key] = demos
        while len(_parsed) > _PARSED_KEEP:
            _parsed.popitem(last=False)
    return demos, digest


def parse_pool_text(pool_path: Path, text: str) -> tuple[Demo, ...]:
    """A pool file's text as demos (write-back checks a pool it writes reads back the same)."""
    builder = _Builder(pool_path)
    try:
        for event in yaml.parse(text, Loader=_Loader):
            builder.feed(event)
    except yaml.MarkedYAMLError as exc:
        mark = exc.context_mark or exc.problem_mark  # where the construct opened
        line = mark.line + 1 if mark is not None else None
        raise PromptFileError(pool_path, f"invalid YAML: {exc.problem or exc.context or exc}", line=line,
                              fix="fix the YAML syntax there") from None
    except yaml.YAMLError as exc:
        raise PromptFileError(pool_path, f"invalid YAML: {exc}", fix="fix the YAML syntax") from None
    return _demos(pool_path, builder.root)


class _Lined(dict):  # type: ignore[type-arg]
    """A mapping that knows the line it starts on (for error messages)."""

    line: int | None = None


class _Builder:
    """Plain values from YAML events: lists, _Lined mappings and strings, nothing else."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stack: list[tuple[list[Any] | _Lined, list[Any]]] = []  # (container, pending key)
        self.root: Any = None

    def feed(self, event: Any) -> None:
        line = event.start_mark.line + 1 if event.start_mark is not None else None
        if isinstance(event, yaml.AliasEvent):
            raise PromptFileError(self.path, f"YAML alias *{event.anchor} is not allowed in pool files", line=line,
                                  fix="write the value out in full instead of referring to an anchor")
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            if len(self.stack) >= MAX_POOL_DEPTH:
                raise PromptFileError(self.path, f"nested more than {MAX_POOL_DEPTH} levels deep", line=line,
                                      fix="flatten the YAML: a pool file needs three levels")
            container: list[Any] | _Lined = [] if isinstance(event, yaml.SequenceStartEvent) else _Lined()
            if isinstance(container, _Lined):
                container.line = line
            self._add(container, line)
            self.stack.append((container, []))
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            self.stack.pop()
        elif isinstance(event, yaml.ScalarEvent):
            self._add(self._scalar(event, line), line)

    def _scalar(self, event: Any, line: int | None) -> str:
        value = event.value
        tag = event.tag
        if tag == "!" or (tag is None and event.style):  # quoted, block or tagged '!': text
            return str(value)
        resolved = str(tag or _resolver.resolve(ScalarNode, value, (True, False)))
        if resolved in (_STR, "!!str"):
            return str(value)
        kind = resolved.rsplit(":", 1)[-1]
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise PromptFileError(self.path, f"{shown!r} is read as YAML {kind}, not text; pool values are text",
                              line=line, fix=f"quote it: '{shown}'")

    def _add(self, value: Any, line: int | None) -> None:
        if not self.stack:
            self.root = value
            return
        container, pending = self.stack[-1]
        if isinstance(container, list):
            container.append(value)
        elif not pending:
            if not isinstance(value, str):
                raise PromptFileError(self.path, "a mapping key must be text", line=line, fix="quote the key")
            if value in container:
                raise PromptFileError(self.path, f"duplicate key {value!r}", line=line, fix="keep one of them")
            pending.append(value)
        else:
            container[pending.pop()] = value


def _demos(pool_path: Path, raw: Any) -> tuple[Demo, ...]:
    if not isinstance(raw, list) or not raw:
        raise PromptFileError(pool_path, "a pool file must be a non-empty list of demos", field="pool",
                              fix="write one '- inputs: {...}\n  output: ...' entry per demo")
    demos = []
    for i, item in enumerate(raw):
        line = item.line if isinstance(item, _Lined) else None
        inputs = item.get("inputs", {}) if isinstance(item, Mapping) else None
        ok = isinstance(item, Mapping) and set(item) <= {"inputs", "output"} and isinstance(item.get("output"), str)
        if not ok or not isinstance(inputs, Mapping) or not all(isinstance(v, str) for v in inputs.values()):
            raise PromptFileError(pool_path, DEMO_SHAPE, field=f"pool[{i}]", line=line,
                                  fix="rewrite the entry in that form: inputs and output are text "
                                      "(quote it where YAML would read a list or mapping)")
        demos.append(Demo(dict(inputs), item["output"]))
    return tuple(demos)


__all__ = ["DEMO_SHAPE", "MAX_POOL_FILE_BYTES", "check_pool_name", "load_pool_file", "parse_pool_text",
           "read_pool_bytes"]
