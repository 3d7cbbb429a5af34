"""Deterministic checks on model output, as plain helpers that fail like an assert.

Each check raises `CheckFailed` (an AssertionError) saying what was expected and what came
back, and records a 1/0 verdict on the running test so prompt scores include it. `equals`
and `json_equals` also record the expected answer, which the optimizer uses as a labelled demo. Each hides its
own frame (`__tracebackhide__`, as pytest's helpers do), so a failure is reported at the line
of the test that called it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

from .record import Verdict, current_record


class CheckFailed(AssertionError):
    pass


def _record(ok: bool, what: str) -> None:
    record = current_record.get()
    if record is not None:
        record.verdicts.append(Verdict(1.0 if ok else 0.0, 1.0, "" if ok else what, what, kind="check"))


def _show(text: str, limit: int = 200) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _fail(what: str, output: str) -> CheckFailed:
    _record(False, what)
    return CheckFailed(f"{what}; got {_show(output)}")


def _normalize(text: str) -> str:
    return " ".join(text.split()).casefold()


def equals(output: str, expected: str, *, normalize: bool = True) -> None:
    """Output equals `expected` (by default ignoring case and surrounding/repeated whitespace)."""
    __tracebackhide__ = True
    record = current_record.get()
    if record is not None:
        record.note_expected(output, expected)
    same = _normalize(output) == _normalize(expected) if normalize else output == expected
    if not same:
        raise _fail(f"expected {_show(expected)}", output)
    _record(True, f"equals {_show(expected)}")


def contains(output: str, *needles: str, case_sensitive: bool = False, all_of: bool = True) -> None:
    """Output contains every needle (or any one, with all_of=False)."""
    __tracebackhide__ = True
    hay = output if case_sensitive else output.casefold()
    found = [n for n in needles if (n if case_sensitive else n.casefold()) in hay]
    ok = len(found) == len(needles) if all_of else bool(found)
    if not ok:
        missing = [n for n in needles if n not in found]
        raise _fail(f"expected the output to contain {'all of' if all_of else 'one of'} {missing}", output)
    _record(True, f"contains {list(needles)}")


def matches(output: str, pattern: str, *, flags: int = 0) -> re.Match[str]:
    """Output matches the regular expression somewhere (re.search); returns the match."""
    __tracebackhide__ = True
    m = re.search(pattern, output, flags)
    if m is None:
        raise _fail(f"expected a match for /{pattern}/", output)
    _record(True, f"matches /{pattern}/")
    return m


def json_output(output: str, schema: dict[str, Any] | None = None) -> Any:
    """Output is JSON (a ```json fence is allowed) and, if given, valid under `schema`."""
    __tracebackhide__ = True
    data = _parsed_json(output)
    if schema is not None:
        try:
            import jsonschema
        except ImportError:
            raise RuntimeError("json_output(schema=...) needs jsonschema: pip install jsonschema") from None
        errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(data), key=lambda e: list(e.path))
        if errors:
            first = errors[0]
            where = "/".join(str(p) for p in first.path) or "(root)"
            raise _fail(f"JSON does not match the schema at {where}: {first.message}", output)
    _record(True, "valid JSON")
    return data


def _parsed_json(output: str) -> Any:
    __tracebackhide__ = True
    text = output.strip()
    if len(text) >= 6 and text.startswith("```") and text.endswith("```"):  # no regex: linear time
        inner = text[3:-3]
        text = (inner[4:] if inner.startswith("json") else inner).strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _fail(f"expected JSON ({exc.msg} at line {exc.lineno} column {exc.colno})", output) from None
    except (ValueError, RecursionError) as exc:  # a 5,000-digit number, nesting deeper than Python's stack
        raise _fail(f"expected JSON the checker can read ({str(exc)[:120]})", output) from None


def json_equals(output: str, expected: Any, fields: Sequence[str] | None = None) -> Any:
    """Output is JSON (a ```json fence is allowed) equal to `expected`, or, with `fields`, equal
    to it in those fields of an object. Fails like an assert with a field-by-field diff; the
    expected object, as JSON, is the case's expected answer (a labelled demo for the
    optimizer). Returns the parsed output."""
    __tracebackhide__ = True
    record = current_record.get()
    if record is not None:
        record.note_expected(output, json.dumps(expected, ensure_ascii=False))
    data = _parsed_json(output)
    differences = _json_differences(data, expected, fields)
    if differences:
        raise _fail("expected JSON equal to " + _show(json.dumps(expected, ensure_ascii=False))
                    + " but " + "; ".join(differences), output)
    _record(True, "JSON equals " + ("the expected object" if fields is None else f"in {list(fields)}"))
    return data


_MISSING = object()


def _json_differences(data: Any, expected: Any, fields: Sequence[str] | None) -> list[str]:
    """What differs, one entry per field: `name: expected X, got Y` (or `missing`)."""
    if fields is None and not (isinstance(data, dict) and isinstance(expected, dict)):
        return [] if data == expected else [f"expected {_show(json.dumps(expected))}, got {_show(json.dumps(data))}"]
    if not isinstance(data, dict):
        return [f"expected an object, got {type(data).__name__}"]
    if not isinstance(expected, dict):
        raise TypeError(f"json_equals(fields=...) compares objects; expected is a {type(expected).__name__}")
    names = list(fields) if fields is not None else list(dict.fromkeys([*expected, *data]))
    out = []
    for name in names:
        want, got = expected.get(name, _MISSING), data.get(name, _MISSING)
        if want == got:
            continue
        if got is _MISSING:
            out.append(f"{name}: missing (expected {json.dumps(want)})")
        elif want is _MISSING:
            out.append(f"{name}: not expected (got {json.dumps(got)})")
        else:
            out.append(f"{name}: expected {json.dumps(want)}, got {json.dumps(got)}")
    return out


def close_to(output: str | float, expected: float, *, tolerance: float = 1e-6, relative: bool = False) -> float:
    """The output (a number, or the first number in the text) is within `tolerance` of
    `expected`; returns it."""
    __tracebackhide__ = True
    if isinstance(output, (int, float)) and not isinstance(output, bool):
        value = float(output)
        output = repr(output)
    elif not isinstance(output, str):
        raise _fail(f"checks.close_to takes the output as text or a number, not {type(output).__name__}; "
                    "pass llm(...)'s text or float(...) of it", repr(output))
    else:
        m = re.search(r"-?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?|-?\.\d+", output)
        if m is None:
            raise _fail(f"expected a number close to {expected}", output)
        value = float(m.group(0).replace(",", ""))
    allowed = tolerance * abs(expected) if relative else tolerance
    if not math.isfinite(value) or abs(value - expected) > allowed:
        raise _fail(f"expected {expected} ± {allowed:g}, found {value}", output)
    _record(True, f"close to {expected}")
    return value
