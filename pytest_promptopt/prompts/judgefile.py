"""Judge files: an LLM judge kept in a file, like a prompt.

```yaml
# judges/polite.yaml
criteria: The reply is polite and answers the customer's question.
threshold: 0.7            # optional; else the test's marker or --promptopt-judge-threshold
mode: yesno               # optional: score | yesno | geval; else --promptopt-judge-mode
model: default            # optional; else the judge endpoint's model
system: |                 # optional: the judge's own system prompt, replacing the built-in one
  You grade customer-support replies. ...
labels: polite.labels.jsonl   # optional: the labelled set next to this file (see labels.py)
models: [gpt-4o-mini, llama-3.1-70b, qwen2.5-72b]   # optional, instead of model: a panel of judges
panel: majority           # optional with models: majority (of pass/fail) | mean (of scores)
demos:                    # optional: labelled cases shown to the judge before the case it grades
  - {output: "Read the FAQ.", verdict: fail, note: does not answer}
retrieve: {k: 4}          # optional, with labels: the k labelled cases nearest each graded output
                          # (BM25), shown as graded exchanges after the demos (judge_pool.py)
```

A `Judge` is frozen; `load_judge` validates the file with the same safe YAML reading as prompt
files (no aliases, bounded size and depth) and names the file, line, field and fix of a problem.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import PromptFileError
from .judge_pool import JUDGE_RETRIEVE_BY
from .labels import LabelledCase, case_of
from .retrieval import MAX_K
from .prompt import YAML_SUFFIXES, _line, caller_folder, locate, parse_yaml, read_prompt_text

JUDGE_KEYS = ("criteria", "threshold", "mode", "model", "system", "labels", "description", "models", "panel", "demos",
              "retrieve")
RETRIEVE_KEYS = ("k", "by")
MAX_JUDGE_DEMOS = 32
PANEL_RULES = ("majority", "mean")
REVIEW_SUFFIX = ".review.jsonl"
MAX_PANEL = 9
FILE_MODES = ("score", "yesno", "geval")
CARD_SUFFIX = ".card.json"
LABEL_SUFFIXES = (".jsonl",)
_FORMAT_FIX = "see the README, Judges you can trust: criteria: ..., threshold: 0.7, labels: <name>.labels.jsonl"


@dataclass(frozen=True)
class Judge:
    """A judge file as loaded: what `judge(output, this_judge, ...)` grades with."""

    path: Path
    criteria: str
    threshold: float | None = None
    mode: str | None = None  # score | yesno | geval; None: the judge_mode setting decides
    model: str | None = None  # None: the judge endpoint's model
    system: str | None = None  # the judge's own system prompt; None: the built-in one of its mode
    labels: str | None = None  # the labelled set's file name, relative to the judge file's folder
    source_digest: str = ""
    models: tuple[str, ...] = ()  # a panel: each member a model name on the judge endpoint
    panel: str = "majority"  # a panel's verdict: majority of pass/fail, or mean of the scores
    demos: tuple[LabelledCase, ...] = ()  # labelled cases shown first, each with its human verdict
    retrieve_k: int = 0  # retrieve: {k: N}: the N labelled cases nearest each graded output; 0: none

    @property
    def is_panel(self) -> bool:
        return len(self.models) > 1

    @property
    def review_path(self) -> Path:
        """Where a panel's hard cases go for a human to label: `polite.yaml` -> `polite.review.jsonl`."""
        return self.path.with_name(self.path.stem + REVIEW_SUFFIX)

    @property
    def key(self) -> str:
        return str(self.path)

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def labels_path(self) -> Path | None:
        return None if self.labels is None else self.path.parent / self.labels

    @property
    def card_path(self) -> Path:
        """The calibration card, next to the judge file: `polite.yaml` -> `polite.card.json`."""
        return self.path.with_name(self.path.stem + CARD_SUFFIX)

    def __repr__(self) -> str:  # shown in pytest's `where` lines: the file, not every field
        return f"Judge({self.path.name})"


def load_judge(path: str | Path, *, root: Path | None = None, near: Path | None = None) -> Judge:
    """Load and validate a judge file; a relative path is looked up as `load_prompt` does:
    next to the calling module first, then under `root` (default: the current directory)."""
    if near is None and root is None and not Path(path).is_absolute():
        near = caller_folder(1)
    p = locate(path, root, near)
    if not p.exists():
        raise PromptFileError(p, "judge file not found", fix="check the path passed to load_judge")
    if p.suffix.lower() not in YAML_SUFFIXES:
        raise PromptFileError(p, f"a judge file is YAML; got {p.suffix or '(no suffix)'!r}",
                              fix="name it <judge>.yaml")
    text, data = read_prompt_text(p)
    doc = parse_yaml(p, text)
    if not isinstance(doc, Mapping):
        raise PromptFileError(p, f"top level must be a mapping with 'criteria', got {type(doc).__name__}",
                              fix=_FORMAT_FIX)
    unknown = [k for k in doc if k not in JUDGE_KEYS]
    if unknown:
        raise PromptFileError(p, f"unknown field {unknown[0]!r}; allowed: {', '.join(JUDGE_KEYS)}",
                              field=str(unknown[0]), line=_line(doc, unknown[0]), fix="remove or rename the field")
    models, panel = _panel(p, doc)
    return Judge(p, _text(p, doc, "criteria", required=True) or "", _threshold(p, doc), _mode(p, doc),
                 _model(p, doc), _text(p, doc, "system"), _labels(p, doc), hashlib.sha256(data).hexdigest(),
                 models, panel, judge_demos(p, doc), judge_retrieve_k(p, doc))


def _text(path: Path, doc: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    value = doc.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        problem = f"missing {key!r}" if value is None else f"{key} must be non-empty text, got {value!r}"
        raise PromptFileError(path, problem, field=key, line=_line(doc, key),
                              fix=f"write {key}: <text> (a block scalar '{key}: |' for several lines)")
    return str(value)


def _threshold(path: Path, doc: Mapping[str, Any]) -> float | None:
    value = doc.get("threshold")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= float(value) <= 1:
        raise PromptFileError(path, f"threshold must be a number from 0 to 1, got {value!r}", field="threshold",
                              line=_line(doc, "threshold"), fix="write e.g. threshold: 0.7")
    return float(value)


def _mode(path: Path, doc: Mapping[str, Any]) -> str | None:
    value = doc.get("mode")
    if value is None or value == "auto":
        return None
    if value not in FILE_MODES:
        raise PromptFileError(path, f"unknown mode {value!r}; allowed: score, yesno, geval, auto", field="mode",
                              line=_line(doc, "mode"), fix="write mode: score (a 0..1 score in the reply) or "
                                                           "mode: yesno (one yes/no token, scored by its probability)")
    return str(value)


def _model(path: Path, doc: Mapping[str, Any]) -> str | None:
    value = doc.get("model")
    if value in (None, "", "default"):
        return None
    if not isinstance(value, str):
        raise PromptFileError(path, f"model must be a string, got {value!r}", field="model",
                              line=_line(doc, "model"), fix="write model: default, or the name the judge endpoint serves")
    return value


def _labels(path: Path, doc: Mapping[str, Any]) -> str | None:
    value = _text(path, doc, "labels")
    if value is None:
        return None
    name = Path(value)
    if name.is_absolute() or ".." in name.parts or name.suffix.lower() not in LABEL_SUFFIXES:
        raise PromptFileError(path, f"labels file {value!r} must be a .jsonl file in the judge's folder (or below it)",
                              field="labels", line=_line(doc, "labels"), fix=f"write labels: {path.stem}.labels.jsonl")
    labels_path = path.parent / name
    if not os.path.isfile(labels_path):
        raise PromptFileError(path, f"labels file {value!r} not found (looked for {labels_path})", field="labels",
                              line=_line(doc, "labels"),
                              fix="create it (one JSON case a line: output, verdict) or fix the name")
    return value


def judge_retrieve_k(path: Path, doc: Mapping[str, Any]) -> int:
    """`retrieve: {k: N, by: bm25}`: how many labelled cases each call is shown; 0 without it."""
    value = doc.get("retrieve")
    if value is None:
        return 0
    fix = f"write retrieve: {{k: 4}} (k from 1 to {MAX_K}; by: bm25, the default and only choice for judges)"
    line = _line(doc, "retrieve")
    if not isinstance(value, Mapping):
        raise PromptFileError(path, f"retrieve must be a mapping, got {value!r}", field="retrieve", line=line, fix=fix)
    unknown = [key for key in value if key not in RETRIEVE_KEYS]
    if unknown:
        raise PromptFileError(path, f"unknown field {unknown[0]!r} in retrieve; allowed: {', '.join(RETRIEVE_KEYS)}",
                              field=f"retrieve.{unknown[0]}", line=line, fix=fix)
    k, by = value.get("k"), value.get("by", "bm25")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise PromptFileError(path, f"retrieve.k must be a whole number from 1 to {MAX_K}, got {k!r}",
                              field="retrieve.k", line=line, fix=fix)
    if by not in JUDGE_RETRIEVE_BY:
        raise PromptFileError(path, f"a judge retrieves by {', '.join(JUDGE_RETRIEVE_BY)}; got by: {by!r}",
                              field="retrieve.by", line=line, fix=fix)
    if doc.get("labels") is None:
        raise PromptFileError(path, "retrieve draws from the judge's labelled set, and this judge has none",
                              field="retrieve", line=line, fix=f"add labels: {path.stem}.labels.jsonl, or remove retrieve")
    return k


def _panel(path: Path, doc: Mapping[str, Any]) -> tuple[tuple[str, ...], str]:
    """`models: [a, b, c]` (a panel of 2 to 9 distinct model names) and `panel: majority|mean`."""
    value, rule = doc.get("models"), doc.get("panel", "majority")
    if value is None:
        if "panel" in doc:
            raise PromptFileError(path, "panel is set but there is no models list", field="panel",
                                  line=_line(doc, "panel"), fix="add models: [model-a, model-b, model-c] or remove panel")
        return (), "majority"
    fix = "write models: [model-a, model-b, model-c] (2 to 9 distinct names the judge endpoint serves)"
    if "model" in doc:
        raise PromptFileError(path, "both model and models are set", field="models", line=_line(doc, "models"),
                              fix="keep model: for one judge, or models: for a panel")
    if not isinstance(value, list) or not 2 <= len(value) <= MAX_PANEL or \
            not all(isinstance(m, str) and m.strip() for m in value) or len(set(value)) != len(value):
        raise PromptFileError(path, f"models must be a list of 2 to {MAX_PANEL} distinct model names, got {value!r}",
                              field="models", line=_line(doc, "models"), fix=fix)
    if rule not in PANEL_RULES:
        raise PromptFileError(path, f"unknown panel rule {rule!r}; allowed: {', '.join(PANEL_RULES)}", field="panel",
                              line=_line(doc, "panel"), fix="write panel: majority (most members pass) or "
                                                            "panel: mean (the mean score against the threshold)")
    return tuple(str(m) for m in value), str(rule)


def judge_demos(path: Path, doc: Mapping[str, Any]) -> tuple[LabelledCase, ...]:
    """`demos:` a list of labelled cases in the labels' fields (output, verdict, expected, note)."""
    value = doc.get("demos")
    if value is None:
        return ()
    fix = "write demos: as a list of {output: ..., verdict: pass|fail} mappings (or remove it)"
    if not isinstance(value, list) or len(value) > MAX_JUDGE_DEMOS:
        raise PromptFileError(path, f"demos must be a list of at most {MAX_JUDGE_DEMOS} labelled cases, got "
                                    f"{type(value).__name__}{f' of {len(value)}' if isinstance(value, list) else ''}",
                              field="demos", line=_line(doc, "demos"), fix=fix)
    out = []
    for index, item in enumerate(value):
        line = _line(value, index) or _line(doc, "demos") or 0
        if not isinstance(item, Mapping):
            raise PromptFileError(path, f"demos[{index}] must be a mapping, got {type(item).__name__}",
                                  field="demos", line=line, fix=fix)
        out.append(case_of(path, line, item))
    return tuple(out)
