"""Prompt files: load, validate and render.

A YAML prompt holds chat messages, demos, an optional retrieval rule (`retrieve:`, demos
picked per call from a pool, see retrieval.py) and sampling parameters; a `.txt`/`.md` file is
one user-message template. Prompts are immutable: the optimizer derives candidates with
`with_instruction` / `with_demos` / `with_retrieval` and the write-back module puts a winner
back on disk.
"""

from __future__ import annotations

import hashlib
import io
import re
import sys
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    CollectionEndEvent,
    CollectionStartEvent,
    ScalarEvent,
)

from ..errors import ConfigError, PromptFileError, PromptOptError, TemplateError
from ..userfiles import UserFileError, read_text
from .demo import Demo
from .pool_file import check_pool_name, load_pool_file, read_pool_bytes
from .retrieval import (
    MAX_K,
    ORDERS,
    SIMILARITIES,
    Embedder,
    RetrievalRule,
    session_embedder,
)
from .template import Template, TemplateOrigin, escape, from_reading_checked, reading

MAX_PROMPT_FILE_BYTES = 1_000_000
MAX_YAML_DEPTH = 50  # a prompt file nests 4 levels; deeper is an accident or an attack
MAX_NUMBER_DIGITS = 100  # longer "numbers" would be costly or impossible to convert
_NUMBER_LIKE = re.compile(r"[-+]?+[0-9][0-9_]*+")
TEXT_SUFFIXES = (".txt", ".md")
YAML_SUFFIXES = (".yaml", ".yml")
ROLES = ("system", "developer", "user", "assistant")
SAMPLING_KEYS = (
    "temperature",
    "top_p",
    "max_tokens",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "response_format",
)
TOP_LEVEL_KEYS = ("model", "messages", "demos", "retrieve", "min_pass_rate", "description", *SAMPLING_KEYS)
RETRIEVE_KEYS = ("k", "by", "order", "pool")
DEFAULT_MODEL_NAMES = (None, "", "default")


@dataclass(frozen=True)
class Message:
    role: str
    template: Template

    @property
    def content(self) -> str:
        return self.template.source


@dataclass(frozen=True)
class Prompt:
    path: Path
    kind: Literal["chat", "text"]
    messages: tuple[Message, ...]
    demos: tuple[Demo, ...] = ()
    model: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    min_pass_rate: float | None = None
    source_digest: str = ""  # sha256 of the bytes this prompt was loaded from
    retrieval: RetrievalRule | None = None  # demos picked per call from a pool (retrieve:)
    pool_digest: str = ""  # sha256 of the pool sidecar file as loaded ("" if none was read)

    # -- derived ---------------------------------------------------------------------------
    @property
    def key(self) -> str:
        """Stable identity of the prompt file within a run."""
        return str(self.path)

    @cached_property
    def placeholders(self) -> frozenset[str]:
        names: set[str] = set()
        for message in self.messages:
            names.update(message.template.placeholders)
        return frozenset(names)

    @property
    def instruction_index(self) -> int:
        """The message the optimizer rewrites: the first system message, else the first one."""
        for i, message in enumerate(self.messages):
            if message.role in ("system", "developer"):
                return i
        return 0

    @property
    def instruction(self) -> str:
        return self.messages[self.instruction_index].content

    @property
    def input_index(self) -> int:
        """The message that carries a case's inputs: the last user message."""
        for i in range(len(self.messages) - 1, -1, -1):
            if self.messages[i].role == "user":
                return i
        return len(self.messages) - 1

    @property
    def uses_model_default(self) -> bool:
        return self.model in DEFAULT_MODEL_NAMES

    # -- derive candidates -----------------------------------------------------------------
    def with_instruction(self, text: str) -> Prompt:
        """A copy whose instruction message is `text`; placeholders must stay the same."""
        index = self.instruction_index
        old = self.messages[index]
        # A proposal rarely ends the way the file's text does: keep the original's trailing line
        # breaks, so a `content: |` block stays `|` on write-back and the message differs only
        # where the proposal changed it.
        ending = old.content[len(old.content.rstrip("\n")):]
        if ending and not text.endswith("\n"):
            text += ending
        origin = TemplateOrigin(self.path, f"messages[{index}].content (proposed)")
        new = Template(text, origin)
        new.validate()
        if set(new.placeholders) != set(old.template.placeholders):
            lost = sorted(set(old.template.placeholders) - set(new.placeholders))
            added = sorted(set(new.placeholders) - set(old.template.placeholders))
            raise TemplateError(
                self.path,
                f"proposed instruction changes the placeholders (dropped: {lost or 'none'}, "
                f"added: {added or 'none'})",
                field=f"messages[{index}].content",
                fix="a rewritten instruction must keep exactly the original placeholders",
            )
        messages = list(self.messages)
        messages[index] = Message(old.role, new)
        return replace(self, messages=tuple(messages))

    @property
    def instruction_as_read(self) -> str:
        """The instruction as a reader (or the optimizer model) sees it: literal braces single,
        placeholders as `{name}`."""
        return reading(self.instruction)

    def with_proposed_instruction(self, text: str) -> Prompt:
        """A copy whose instruction is `text` written as it reads (see `instruction_as_read`):
        `{name}` for each of the instruction's placeholders, every other brace (a JSON example,
        code) literal, escaped in the template so the file reloads to the same text. Refused if
        it drops one of the placeholders or adds a `{name}` that is not one."""
        template = self.messages[self.instruction_index].template
        origin = TemplateOrigin(self.path, f"messages[{self.instruction_index}].content")
        return self.with_instruction(from_reading_checked(text, template.placeholders, origin))

    def with_demos(self, demos: tuple[Demo, ...]) -> Prompt:
        return replace(self, demos=tuple(demos))

    @property
    def supports_retrieval(self) -> bool:
        """Only chat prompts: a .txt/.md template has no field to declare a retrieval rule in."""
        return self.kind == "chat"

    def with_retrieval(self, pool: tuple[Demo, ...], k: int = 4, by: str = "bm25", *,
                       order: str = "nearest_last", pool_file: str | None = None) -> Prompt:
        """A copy that retrieves `k` demos per call from `pool` (static demos stay as they are).

        The pool is written to `pool_file` (relative to the prompt's folder): by default the
        sidecar this prompt already names, else `<stem>.pool.yaml`; a pool that was written
        inline in the prompt file stays inline.
        """
        if not self.supports_retrieval:
            raise PromptOptError(
                f"{self.path}: retrieved demos need a YAML chat prompt; a .txt/.md template has no "
                "place to declare them. Convert it to YAML (messages: [{role: user, content: ...}])"
            )
        if pool_file is None:
            current = self.retrieval
            pool_file = current.pool_file if current is not None else f"{self.path.stem}.pool.yaml"
        rule = RetrievalRule(tuple(pool), k, by, order, pool_file)  # type: ignore[arg-type]
        _check_rule(self.path, rule, self.placeholders)
        return replace(self, retrieval=rule)

    def without_retrieval(self) -> Prompt:
        return replace(self, retrieval=None)

    # -- render ----------------------------------------------------------------------------
    def retrieved_demos(self, variables: Mapping[str, object], embed: Embedder | None = None) -> tuple[Demo, ...]:
        """The demos retrieval picks for this call (empty without a retrieval rule). `by:
        embeddings` without `embed` uses the running session's embedding model, as llm() does."""
        rule = self.retrieval
        if rule is None:
            return ()
        if rule.by == "embeddings" and embed is None:
            embed = session_embedder()
        if rule.by == "embeddings" and embed is None:
            raise ConfigError(
                f"{self.path}: retrieve.by is 'embeddings' but no embedding model is set; set "
                "--promptopt-embedding-model (ini promptopt_embedding_model, environment "
                "PROMPTOPT_EMBEDDING_MODEL) or write 'by: bm25'"
            )
        return rule.select(variables, embed)

    def render(self, variables: Mapping[str, object], *, embed: Embedder | None = None) -> list[dict[str, str]]:
        """The request's messages: static parts first, retrieved demos last, then the input,
        so consecutive calls share the longest possible prefix."""
        unknown = sorted(set(variables) - self.placeholders)
        if unknown:
            raise TemplateError(
                self.path,
                f"unknown variable(s) {unknown}; the prompt's placeholders are "
                f"{sorted(self.placeholders) or 'none'}",
                fix="remove the extra keyword argument(s) or add the placeholder to the prompt",
            )
        if self.kind == "text":
            body = self.messages[0].template.render(variables)
            if self.demos:
                body = examples_block(self.demos) + body
            return [{"role": "user", "content": body}]
        rendered = [{"role": m.role, "content": m.template.render(variables)} for m in self.messages]
        retrieved = self.retrieved_demos(variables, embed)
        if not self.demos and not retrieved:
            return rendered
        demo_at = next((i for i, m in enumerate(self.messages) if m.role not in ("system", "developer")), None)
        if demo_at is None:
            # No user turn to imitate: the demos become an examples block at the top of the
            # message that carries the inputs, as in a text prompt, so the request still ends
            # with the real input.
            block = examples_block(self.demos + retrieved)
            rendered[self.input_index]["content"] = block + rendered[self.input_index]["content"]
            return rendered
        # Retrieved turns go just before the input message, static ones after the leading
        # system/developer messages: inserting the later position first keeps both indexes valid.
        rendered[self.input_index:self.input_index] = self._demo_turns(retrieved, variables)
        rendered[demo_at:demo_at] = self._demo_turns(self.demos, variables)
        return rendered

    def _demo_turns(self, demos: tuple[Demo, ...], variables: Mapping[str, object]) -> list[dict[str, str]]:
        """Each demo as a user turn (the input message filled with its inputs) and the answer."""
        input_template = self.messages[self.input_index].template
        turns: list[dict[str, str]] = []
        for demo in demos:
            merged = {**variables, **demo.inputs}
            turns.append({"role": "user", "content": input_template.render(merged)})
            turns.append({"role": "assistant", "content": demo.output})
        return turns

    def sampling(self) -> dict[str, Any]:
        return dict(self.params)


def examples_block(demos: tuple[Demo, ...]) -> str:
    """Demos of a text prompt, written as a plain examples block above the template."""
    parts = ["Examples:\n"]
    for demo in demos:
        inputs = "; ".join(f"{k}: {v}" for k, v in demo.inputs.items())
        parts.append(f"Input: {inputs}\nOutput: {demo.output}\n")
    parts.append("\n")
    return "\n".join(parts)


def examples_block_template(demos: tuple[Demo, ...]) -> str:
    """The examples block as template source (braces escaped) for writing into a text prompt."""
    return escape(examples_block(demos))


_EXAMPLES_HEAD = "Examples:\n\n"


def split_examples_block(source: str) -> tuple[tuple[Demo, ...], str]:
    """A text prompt's source as (demos, template): the examples block that write-back put at
    the top is read back as demos, so a second optimization replaces it instead of stacking a
    second block above it. Only a block that `examples_block_template` writes exactly as found
    counts; anything else stays part of the template."""
    end = source.find("\n\n\n", len(_EXAMPLES_HEAD) - 2) if source.startswith(_EXAMPLES_HEAD) else -1
    if end < 0:
        return (), source
    block = source[: end + 3]
    body = block[len(_EXAMPLES_HEAD):-2].replace("{{", "{").replace("}}", "}")
    demos: list[Demo] = []
    for entry in body.removesuffix("\n").split("\n\nInput: "):
        inputs, found, output = entry.removeprefix("Input: ").partition("\nOutput: ")
        pairs = [item.partition(": ") for item in inputs.split("; ")] if inputs else []
        if not found or any(not sep for _, sep, _ in pairs):
            return (), source
        demos.append(Demo({k: v for k, _, v in pairs}, output))
    if examples_block_template(tuple(demos)) != block:
        return (), source
    return tuple(demos), source[len(block):]


# -- loading -------------------------------------------------------------------------------

_yaml = YAML(typ="rt")


def read_prompt_text(path: Path) -> tuple[str, bytes]:
    """The prompt file's text and bytes, through the user-file guards (regular file, size
    checked while reading, UTF-8)."""
    try:
        return read_text(path, limit=MAX_PROMPT_FILE_BYTES, what="prompt file")
    except FileNotFoundError:
        raise PromptFileError(path, "prompt file not found", fix="check the path passed to load_prompt") from None
    except UserFileError as exc:
        fix = {"a directory": "pass a .yaml, .txt or .md file",
               "limited": "keep large data out of the prompt file and pass it as a variable"}
        chosen = next((f for word, f in fix.items() if word in exc.problem), exc.fix)
        raise PromptFileError(path, exc.problem, line=exc.line, fix=chosen) from None


_LOADED_KEEP = 256  # prompts kept loaded per process (by path and digest)
_loaded: OrderedDict[tuple[Path, str], Prompt] = OrderedDict()
_loaded_paths: set[Path] = set()
_loaded_lock = threading.Lock()


def loaded_prompt_paths() -> frozenset[Path]:
    """Every prompt file this process has loaded (resolved paths): what send-ahead may read."""
    with _loaded_lock:
        return frozenset(_loaded_paths)


def _remembered(path: Path, digest: str) -> Prompt | None:
    """The prompt loaded before from these exact bytes, if its pool file is unchanged too."""
    with _loaded_lock:
        prompt = _loaded.get((path, digest))
    rule = prompt.retrieval if prompt is not None else None
    if prompt is None or rule is None or rule.pool_file is None:
        return prompt
    try:
        pool = read_pool_bytes(path.parent / rule.pool_file)
    except (FileNotFoundError, PromptFileError):
        return None  # load it again: the full load reports the problem
    return prompt if hashlib.sha256(pool).hexdigest() == prompt.pool_digest else None


def _remember(prompt: Prompt) -> Prompt:
    with _loaded_lock:
        _loaded[(prompt.path, prompt.source_digest)] = prompt
        _loaded_paths.add(prompt.path)
        while len(_loaded) > _LOADED_KEEP:
            _loaded.popitem(last=False)
    return prompt


def load_prompt(path: str | Path, *, root: Path | None = None, near: Path | None = None) -> Prompt:
    """Load and validate a prompt file.

    A relative path is looked up next to the calling module first (so a test file can say
    `load_prompt("prompts/intent.yaml")` wherever pytest is started), then under `root`
    (default: the current directory). `near` names the caller's folder for a wrapper (the `llm`
    fixture passes its caller's, so `llm("prompts/x.yaml")` follows the same rule).
    """
    if near is None and root is None and not Path(path).is_absolute():
        near = caller_folder(1)
    p = locate(path, root, near)
    text, data = read_prompt_text(p)
    digest = hashlib.sha256(data).hexdigest()
    known = _remembered(p, digest)  # parsed once per (path, digest): llm("path") loads on every call
    return known if known is not None else _remember(_parse_prompt(p, text, digest))


def _parse_prompt(p: Path, text: str, digest: str) -> Prompt:
    suffix = p.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        if not text.strip():
            raise PromptFileError(p, "the template is empty (a .txt/.md prompt file is the user message itself)",
                                  line=1, fix="write the prompt text, with {placeholders} for the variables")
        demos, source = split_examples_block(text)
        template = Template(source, TemplateOrigin(p, "template", 1 + text[: len(text) - len(source)].count("\n")))
        template.validate()
        return Prompt(p, "text", (Message("user", template),), demos, source_digest=digest)
    if suffix in YAML_SUFFIXES:
        return _prompt_from_yaml(p, text, digest)
    raise PromptFileError(
        p,
        f"unsupported prompt file type {suffix or '(none)'!r}",
        fix="use .yaml/.yml for chat prompts or .txt/.md for a plain template",
    )


def locate(path: str | Path, root: Path | None, near: Path | None) -> Path:
    """A relative path: under `near` (the caller's folder) if it exists there, else under `root`
    (default: the current directory); resolved."""
    p = Path(path)
    if not p.is_absolute():
        candidates = [d / p for d in (near, root or Path.cwd()) if d is not None]
        p = next((c for c in candidates if c.exists()), candidates[-1])
    return p.resolve()


def caller_folder(depth: int) -> Path | None:
    """The folder of the module `depth` frames above the caller of this function."""
    caller = sys._getframe(depth + 1).f_globals.get("__file__")
    return Path(caller).parent if caller else None


def _check_yaml_events(path: Path, text: str) -> None:
    """Refuse, before anything is built, what would blow up building it: aliases (each can
    expand to a copy of a large tree: "billion laughs"), deep nesting and huge integers."""
    depth = 0
    for event in _yaml.parse(io.StringIO(text)):
        line = event.start_mark.line + 1 if event.start_mark is not None else None
        if isinstance(event, AliasEvent):
            raise PromptFileError(path, f"YAML alias *{event.anchor} is not allowed in prompt files", line=line,
                                  fix="write the value out in full instead of referring to an anchor")
        if isinstance(event, CollectionStartEvent):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise PromptFileError(path, f"nested more than {MAX_YAML_DEPTH} levels deep", line=line,
                                      fix="flatten the YAML: a prompt file needs a few levels")
        elif isinstance(event, CollectionEndEvent):
            depth -= 1
        elif (isinstance(event, ScalarEvent) and event.style is None and len(event.value) > MAX_NUMBER_DIGITS
              and _NUMBER_LIKE.fullmatch(event.value)):
            raise PromptFileError(path, f"a number of {len(event.value):,} digits", line=line,
                                  fix=f"quote it if it is text; numbers are limited to {MAX_NUMBER_DIGITS} digits")


def parse_yaml(path: Path, text: str) -> Any:
    try:
        _check_yaml_events(path, text)
        return _yaml.load(io.StringIO(text))
    except MarkedYAMLError as exc:
        raise _yaml_syntax_error(path, exc) from None
    except YAMLError as exc:
        raise PromptFileError(path, f"invalid YAML: {exc}", fix="fix the YAML syntax") from None


def _yaml_syntax_error(path: Path, exc: MarkedYAMLError) -> PromptFileError:
    """Named where the problem starts: the parser notices an unclosed quote or bracket where it
    gives up (often the end of the file), and its context mark is where that construct opened."""
    start, found = exc.context_mark, exc.problem_mark
    where = start or found
    at = f"line {where.line + 1}, column {where.column + 1}" if where is not None else ""
    problem = f"invalid YAML: {exc.problem or exc}" + (f" ({at})" if at else "")
    if start is not None and found is not None and found.line != start.line:
        problem = f"invalid YAML: {exc.context} ({at}), {exc.problem} (line {found.line + 1})"
    elif start is not None and exc.context:
        problem = f"invalid YAML: {exc.context}: {exc.problem} ({at})"
    return PromptFileError(path, problem, line=where.line + 1 if where is not None else None,
                           fix="fix the YAML syntax there: close the quote or bracket opened on that line, "
                               "or indent the line as its neighbours")


def _line(node: Any, key: Any = None) -> int | None:
    lc = getattr(node, "lc", None)
    if lc is None:
        return None
    try:
        if key is None:
            return int(lc.line) + 1
        if isinstance(key, int):
            return int(lc.item(key)[0]) + 1
        return int(lc.value(key)[0]) + 1
    except (KeyError, IndexError, TypeError, AttributeError):
        return None


def _content_first_line(node: Any, key: str, text: str) -> int | None:
    """First line of a scalar's text: block scalars (| and >) start on the next line."""
    line = _line(node, key)
    if line is None:
        return None
    value = node[key]
    style = getattr(value, "style", None) if hasattr(value, "style") else None
    if type(value).__name__ in ("LiteralScalarString", "FoldedScalarString") or style in ("|", ">"):
        return line + 1
    return line


def _prompt_from_yaml(path: Path, text: str, digest: str) -> Prompt:
    doc = _top_level(path, parse_yaml(path, text))
    messages = _messages(path, doc, text)
    demos = _load_demos(path, doc)
    params: dict[str, Any] = {}
    for key in SAMPLING_KEYS:
        if key in doc and doc[key] is not None:
            params[key] = _plain(doc[key])
    _check_params(path, doc, params)
    model = doc.get("model")
    if model is not None and not isinstance(model, str):
        raise PromptFileError(path, "model must be a string", field="model", line=_line(doc, "model"),
                              fix="write model: default, or the name the endpoint serves")
    min_pass_rate = doc.get("min_pass_rate")
    if min_pass_rate is not None:
        if not isinstance(min_pass_rate, (int, float)) or not 0 <= float(min_pass_rate) <= 1:
            raise PromptFileError(path, f"min_pass_rate must be a number from 0 to 1, got {min_pass_rate!r}",
                                  field="min_pass_rate", line=_line(doc, "min_pass_rate"),
                                  fix="write e.g. min_pass_rate: 0.8")
        min_pass_rate = float(min_pass_rate)
    placeholders = frozenset(name for m in messages for name in m.template.placeholders)
    retrieval, pool_digest = load_retrieval(path, doc, placeholders)
    return Prompt(path, "chat", tuple(messages), demos, model, params, min_pass_rate, digest,
                  retrieval, pool_digest)


def _top_level(path: Path, doc: Any) -> Mapping[str, Any]:
    if not isinstance(doc, Mapping):
        raise PromptFileError(
            path,
            f"top level must be a mapping with a 'messages' list, got {type(doc).__name__}",
            fix="start the file with 'messages:' (see the README for the format)",
        )
    unknown = [k for k in doc if k not in TOP_LEVEL_KEYS]
    if unknown:
        raise PromptFileError(
            path,
            f"unknown field {unknown[0]!r}; allowed: {', '.join(TOP_LEVEL_KEYS)}",
            field=str(unknown[0]),
            line=_line(doc, unknown[0]),
            fix="remove or rename the field",
        )
    return doc


def _messages(path: Path, doc: Mapping[str, Any], text: str) -> list[Message]:
    raw_messages = doc.get("messages")
    if raw_messages is None:
        raise PromptFileError(
            path, "missing 'messages'", field="messages",
            fix="add 'messages:' with a list of {role, content} entries",
        )
    if not isinstance(raw_messages, list) or not raw_messages:
        raise PromptFileError(
            path, "'messages' must be a non-empty list", field="messages", line=_line(doc, "messages"),
            fix="write messages as a list of {role: ..., content: ...} mappings",
        )
    return [_message(path, raw_messages, i, text) for i in range(len(raw_messages))]


def _message(path: Path, raw_messages: list[Any], i: int, text: str) -> Message:
    fname = f"messages[{i}]"
    raw = raw_messages[i]
    if not isinstance(raw, Mapping):
        raise PromptFileError(path, "each message must be a mapping", field=fname,
                              line=_line(raw_messages, i), fix="write {role: user, content: ...}")
    extra = [k for k in raw if k not in ("role", "content")]
    if extra:
        raise PromptFileError(path, f"unknown message field {extra[0]!r}; allowed: role, content",
                              field=fname, line=_line(raw, extra[0]), fix="remove the field")
    role = raw.get("role")
    if role not in ROLES:
        raise PromptFileError(path, f"unknown role {role!r}; allowed: {', '.join(ROLES)}",
                              field=f"{fname}.role", line=_line(raw, "role") or _line(raw_messages, i),
                              fix="use one of the allowed roles")
    content = raw.get("content")
    if not isinstance(content, str):
        raise PromptFileError(path, f"content must be text, got {type(content).__name__}",
                              field=f"{fname}.content", line=_line(raw, "content") or _line(raw_messages, i),
                              fix="quote the content or use a block scalar (content: |)")
    origin = TemplateOrigin(path, f"{fname}.content", _content_first_line(raw, "content", text))
    template = Template(str(content), origin)
    template.validate()
    return Message(str(role), template)


def _load_demos(path: Path, doc: Mapping[str, Any]) -> tuple[Demo, ...]:
    raw = doc.get("demos")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise PromptFileError(path, "demos must be a list", field="demos", line=_line(doc, "demos"),
                              fix="write demos: [] or a list of {inputs: {...}, output: ...}")
    return _demo_list(path, raw, "demos")


def read_demo_list(path: Path, raw: Any) -> tuple[Demo, ...]:
    """A pool file's parsed content as demos (for write-back's read-back check)."""
    if not isinstance(raw, list):
        raise PromptFileError(path, "a pool file must be a non-empty list of demos", field="pool")
    return _demo_list(path, raw, "pool")


def _demo_list(path: Path, raw: list[Any], field_name: str) -> tuple[Demo, ...]:
    """Entries of a demo list (`demos`, an inline pool or a pool file), each {inputs, output}."""
    demos = []
    for i, item in enumerate(raw):
        fname = f"{field_name}[{i}]"
        ok = isinstance(item, Mapping) and set(item) <= {"inputs", "output"} and "output" in item
        inputs = item.get("inputs", {}) if isinstance(item, Mapping) else None
        if not ok or not isinstance(inputs, Mapping):
            raise PromptFileError(path, "each demo must be {inputs: {name: value}, output: text}",
                                  field=fname, line=_line(raw, i), fix="rewrite the demo in that form")
        for key, value in [*inputs.items(), ("output", item["output"])]:
            if not isinstance(value, str):
                node, at = (item, key) if key == "output" else (inputs, key)
                raise PromptFileError(path, f"{fname}.{key} is {_yaml_kind(value)} ({value!r:.40}), not text; "
                                            "demo values are text", field=fname, line=_line(node, at) or _line(raw, i),
                                      fix="quote it")
        demos.append(Demo({str(k): str(v) for k, v in inputs.items()}, str(item["output"])))
    return tuple(demos)


def _yaml_kind(value: Any) -> str:
    """How YAML read a value that is not text ("a number", "a boolean", ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return "a list" if isinstance(value, list) else "a mapping" if isinstance(value, Mapping) else "not text"


# -- retrieval (retrieve:) ---------------------------------------------------------------------

RETRIEVE_FIX = "write e.g. retrieve: {k: 4, by: bm25, pool: intent.pool.yaml} (see the README, Retrieved demos)"


def load_retrieval(path: Path, doc: Mapping[str, Any],
                   placeholders: frozenset[str]) -> tuple[RetrievalRule | None, str]:
    """The prompt's retrieval rule, and the digest of the pool file it read ("" if inline)."""
    raw = doc.get("retrieve")
    if raw is None:
        return None, ""
    line = _line(doc, "retrieve")
    if not isinstance(raw, Mapping):
        raise PromptFileError(path, "retrieve must be a mapping", field="retrieve", line=line, fix=RETRIEVE_FIX)
    unknown = [k for k in raw if k not in RETRIEVE_KEYS]
    if unknown:
        raise PromptFileError(path, f"unknown field {unknown[0]!r}; allowed: {', '.join(RETRIEVE_KEYS)}",
                              field=f"retrieve.{unknown[0]}", line=_line(raw, unknown[0]), fix="remove or rename it")
    k = raw.get("k", 4)
    by = raw.get("by", "bm25")
    order = raw.get("order", "nearest_last")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise PromptFileError(path, f"k must be a whole number from 1 to {MAX_K}, got {k!r}", field="retrieve.k",
                              line=_line(raw, "k") or line, fix="write e.g. k: 4 (demos per call)")
    if by not in SIMILARITIES:
        raise PromptFileError(path, f"unknown similarity {by!r}; allowed: {', '.join(SIMILARITIES)}",
                              field="retrieve.by", line=_line(raw, "by") or line,
                              fix="write by: bm25 (needs no model) or by: embeddings")
    if order not in ORDERS:
        raise PromptFileError(path, f"unknown order {order!r}; allowed: {', '.join(ORDERS)}",
                              field="retrieve.order", line=_line(raw, "order") or line,
                              fix="write order: nearest_last (the most similar demo just before the input)")
    pool_raw = raw.get("pool")
    pool_digest = ""
    if isinstance(pool_raw, str):
        pool, pool_digest = load_pool_file(path, pool_raw, _line(raw, "pool") or line)
        pool_file: str | None = pool_raw
    elif isinstance(pool_raw, list):
        pool, pool_file = _demo_list(path, pool_raw, "retrieve.pool"), None
    else:
        raise PromptFileError(path, "retrieve.pool must name a pool file or list the demos inline",
                              field="retrieve.pool", line=_line(raw, "pool") or line,
                              fix="write pool: <name>.pool.yaml (a file next to the prompt) or a list of "
                                  "{inputs: {...}, output: ...}")
    rule = RetrievalRule(pool, int(k), str(by), str(order), pool_file)  # type: ignore[arg-type]
    _check_rule(path, rule, placeholders)
    return rule, pool_digest


def _check_rule(path: Path, rule: RetrievalRule, placeholders: frozenset[str]) -> None:
    """A pool the prompt can render: not empty, keyed by the prompt's own placeholders."""
    if rule.pool_file is not None:
        check_pool_name(path, rule.pool_file)
    if not rule.pool:
        raise PromptFileError(path, "the retrieval pool is empty", field="retrieve.pool",
                              fix="add demos to the pool, or remove the retrieve section")
    for i, demo in enumerate(rule.pool):
        stray = sorted(set(demo.inputs) - placeholders)
        if stray or not demo.inputs:
            where = rule.pool_file or "retrieve.pool"
            problem = (f"pool entry {i} of {where} has input(s) {stray} that are not placeholders of the prompt"
                       if stray else f"pool entry {i} of {where} has no inputs to compare with a call's input")
            raise PromptFileError(path, problem, field=f"retrieve.pool[{i}]",
                                  fix=f"key the entry's inputs by the prompt's placeholders: {sorted(placeholders)}")
    if rule.k < 1 or rule.k > MAX_K or rule.by not in SIMILARITIES or rule.order not in ORDERS:
        raise PromptFileError(path, f"invalid retrieval rule k={rule.k!r}, by={rule.by!r}, order={rule.order!r}",
                              field="retrieve", fix=f"k from 1 to {MAX_K}; by one of {', '.join(SIMILARITIES)}; "
                                                    f"order one of {', '.join(ORDERS)}")


def _check_params(path: Path, doc: Any, params: Mapping[str, Any]) -> None:
    numeric = {"temperature": (0.0, 2.0), "top_p": (0.0, 1.0), "presence_penalty": (-2.0, 2.0),
               "frequency_penalty": (-2.0, 2.0)}
    for key, (lo, hi) in numeric.items():
        if key in params:
            value = params[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
                raise PromptFileError(path, f"{key} must be a number from {lo} to {hi}, got {value!r}",
                                      field=key, line=_line(doc, key), fix=f"write e.g. {key}: {lo}")
    for key in ("max_tokens", "seed"):
        if key in params and (isinstance(params[key], bool) or not isinstance(params[key], int)):
            raise PromptFileError(path, f"{key} must be a whole number, got {params[key]!r}",
                                  field=key, line=_line(doc, key), fix=f"write e.g. {key}: 64")


def _plain(value: Any) -> Any:
    """ruamel's round-trip types -> plain Python, so params hash and serialize predictably."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)
