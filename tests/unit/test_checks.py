"""Deterministic checks: pass/fail behaviour, messages, and what they record on the test."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from pytest_promptopt.run import checks
from pytest_promptopt.run.checks import CheckFailed
from pytest_promptopt.run.record import Label, Trace, Verdict, current_record
from pytest_promptopt.run.record import (
    TestRecord as Record,  # aliased: pytest would try to collect Test*
)


@pytest.fixture
def record() -> Record:
    return Record("tests/test_x.py::test_y")


@contextmanager
def recording(rec: Record) -> Iterator[Record]:
    """Make `rec` the running test's record. Set inside the test body: the plugin installs its
    own record around the test call, which would hide one set by a fixture."""
    token = current_record.set(rec)
    try:
        yield rec
    finally:
        current_record.reset(token)


def trace(output: str) -> Trace:
    return Trace("prompts/p.yaml", {"q": "x"}, ({"role": "user", "content": "x"},), output, "m")


def fails(func: object, *args: object, **kwargs: object) -> str:
    """Run a check that must fail; return its message."""
    with pytest.raises(CheckFailed) as info:
        func(*args, **kwargs)  # type: ignore[operator]
    assert isinstance(info.value, AssertionError)  # a failed check fails the test like an assert
    return str(info.value)


# -- equals ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("output", "expected"), [("Paris", "Paris"), ("  paris\n", "Paris"),
                                                  ("New   York", "new york")])
def test_equals_normalized_passes(output: str, expected: str) -> None:
    checks.equals(output, expected)


def test_equals_fails_with_expected_and_received() -> None:
    message = fails(checks.equals, "Lyon", "Paris")
    assert "expected 'Paris'" in message
    assert "got 'Lyon'" in message


def test_equals_strict() -> None:
    checks.equals("Paris", "Paris", normalize=False)
    message = fails(checks.equals, "paris ", "Paris", normalize=False)
    assert "got 'paris '" in message


def test_long_output_is_cut_in_message() -> None:
    message = fails(checks.equals, "x" * 1000, "y")
    assert "x" * 200 + "…" in message and "x" * 201 not in message


# -- contains ----------------------------------------------------------------------------------------


def test_contains_all_of() -> None:
    checks.contains("The capital is Paris, France.", "paris", "FRANCE")
    message = fails(checks.contains, "The capital is Paris.", "Paris", "France", "Europe")
    assert "contain all of ['France', 'Europe']" in message
    assert "got 'The capital is Paris.'" in message


def test_contains_any_of() -> None:
    checks.contains("blue sky", "red", "blue", all_of=False)
    message = fails(checks.contains, "green grass", "red", "blue", all_of=False)
    assert "contain one of ['red', 'blue']" in message


def test_contains_case_sensitive() -> None:
    checks.contains("Paris", "Paris", case_sensitive=True)
    message = fails(checks.contains, "paris", "Paris", case_sensitive=True)
    assert "['Paris']" in message


def test_contains_case_insensitive_reports_only_missing() -> None:
    # "PARIS" was found case-insensitively, so only "Rome" is missing.
    message = fails(checks.contains, "paris", "PARIS", "Rome")
    assert "['Rome']" in message


# -- matches -----------------------------------------------------------------------------------------


def test_matches_returns_the_match() -> None:
    m = checks.matches("Order #12345 shipped", r"#(\d+)")
    assert m.group(1) == "12345"


def test_matches_fails() -> None:
    message = fails(checks.matches, "no order here", r"#\d+")
    assert r"expected a match for /#\d+/" in message
    assert "got 'no order here'" in message


def test_matches_flags() -> None:
    import re

    checks.matches("HELLO", "hello", flags=re.IGNORECASE)
    fails(checks.matches, "HELLO", "hello")


# -- json_output -------------------------------------------------------------------------------------


SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
}


@pytest.mark.parametrize(
    "output",
    ['{"name": "Ada", "age": 36}', '```json\n{"name": "Ada", "age": 36}\n```',
     '```\n{"name": "Ada", "age": 36}\n```', '  {"name": "Ada", "age": 36}\n'],
)
def test_json_output_parses(output: str) -> None:
    assert checks.json_output(output) == {"name": "Ada", "age": 36}
    assert checks.json_output(output, SCHEMA) == {"name": "Ada", "age": 36}


def test_json_output_not_json() -> None:
    message = fails(checks.json_output, "Sure! Here it is: {name: Ada}")
    assert "expected JSON" in message and "line 1 column 1" in message
    assert "got 'Sure! Here it is: {name: Ada}'" in message


@pytest.mark.parametrize(
    ("output", "where", "what"),
    [
        ('{"name": "Ada"}', "(root)", "'age' is a required property"),
        ('{"name": "Ada", "age": -1}', "age", "minimum"),
        ('{"name": 5, "age": 3}', "name", "is not of type 'string'"),
        ('[1, 2]', "(root)", "is not of type 'object'"),
    ],
)
def test_json_output_schema_failures(output: str, where: str, what: str) -> None:
    message = fails(checks.json_output, output, SCHEMA)
    assert f"does not match the schema at {where}" in message
    assert what in message
    assert f"got {output!r}" in message


def test_json_output_without_schema_accepts_any_json() -> None:
    assert checks.json_output("[1, 2]") == [1, 2]
    assert checks.json_output("null") is None


# -- close_to ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "expected", "value"),
    [("42", 42, 42.0), ("The answer is 3.14159.", 3.14159, 3.14159), ("Total: 1,234.5 USD", 1234.5, 1234.5),
     ("-7 degrees", -7, -7.0), ("about 1e3", 1000, 1000.0), ("x = .5", 0.5, 0.5)],
)
def test_close_to_reads_first_number(output: str, expected: float, value: float) -> None:
    assert checks.close_to(output, expected) == pytest.approx(value)


def test_close_to_tolerance() -> None:
    checks.close_to("3.1", 3.14, tolerance=0.05)
    message = fails(checks.close_to, "3.0", 3.14, tolerance=0.05)
    assert "expected 3.14 ± 0.05, found 3.0" in message
    assert "got '3.0'" in message


def test_close_to_relative() -> None:
    checks.close_to("1050", 1000, tolerance=0.1, relative=True)
    message = fails(checks.close_to, "1200", 1000, tolerance=0.1, relative=True)
    assert "± 100" in message


def test_close_to_no_number() -> None:
    message = fails(checks.close_to, "no idea", 5)
    assert "expected a number close to 5" in message
    assert "got 'no idea'" in message


def test_close_to_uses_first_number_only() -> None:
    # The first number is the answer; a later correct number does not rescue a wrong one.
    fails(checks.close_to, "It is 4, not 5", 5)


# -- recording on the running test -------------------------------------------------------------------


def test_no_record_outside_a_test() -> None:
    # A fresh context has no running test: checks still work and record nothing.
    def run() -> None:
        assert current_record.get() is None
        checks.equals("a", "a")
        with pytest.raises(CheckFailed):
            checks.contains("a", "b")

    contextvars.Context().run(run)


def test_pass_and_fail_verdicts_recorded(record: Record) -> None:
    with recording(record):
        checks.contains("abc", "b")
        with pytest.raises(CheckFailed):
            checks.matches("abc", r"\d")
        checks.json_output("{}")
        with pytest.raises(CheckFailed):
            checks.close_to("1", 2)
        assert [v.score for v in record.verdicts] == [1.0, 0.0, 1.0, 0.0]
        assert all(v.threshold == 1.0 for v in record.verdicts)
        assert [v.passed for v in record.verdicts] == [True, False, True, False]
        failed = record.verdicts[1]
        assert failed.reason == r"expected a match for /\d/" and failed.criteria == failed.reason
        assert record.verdicts[0].reason == ""  # a pass has nothing to explain
        assert record.score(passed=False) == 0.5  # verdicts drive the test's score


def test_each_check_records_exactly_one_verdict(record: Record) -> None:
    with recording(record):
        for call in (lambda: checks.equals("a", "a"), lambda: checks.contains("a", "a"),
                     lambda: checks.matches("a", "a"), lambda: checks.json_output("1"),
                     lambda: checks.close_to("1", 1)):
            before = len(record.verdicts)
            call()
            assert len(record.verdicts) == before + 1


def test_equals_records_label_for_traced_output(record: Record) -> None:
    with recording(record):
        record.traces.append(trace("Lyon"))
        with pytest.raises(CheckFailed):
            checks.equals("Lyon", "Paris")
        assert record.labels == [Label(0, "Paris")]
        assert record.verdicts == [Verdict(0.0, 1.0, "expected 'Paris'", "expected 'Paris'", kind="check")]


def test_equals_labels_the_trace_the_output_came_from(record: Record) -> None:
    with recording(record):
        record.traces.extend([trace("first answer"), trace("  Second Answer\n")])
        checks.equals("first answer", "First answer")
        checks.equals("Second Answer", "second answer")  # stripped output is part of trace 1
        assert record.labels == [Label(0, "First answer"), Label(1, "second answer")]
        assert [v.passed for v in record.verdicts] == [True, True]


def test_equals_without_trace_records_no_label(record: Record) -> None:
    with recording(record):
        record.traces.append(trace("something else"))
        checks.equals("Paris", "Paris")
        assert record.labels == []
        assert len(record.verdicts) == 1 and record.verdicts[0].passed


def test_equals_labels_a_trace_once(record: Record) -> None:
    with recording(record):
        record.traces.append(trace("Lyon"))
        with pytest.raises(CheckFailed):
            checks.equals("Lyon", "Paris")
        with pytest.raises(CheckFailed):
            checks.equals("Lyon", "Marseille")
        assert record.labels == [Label(0, "Paris")]


def test_blank_expected_is_not_a_label(record: Record) -> None:
    with recording(record):
        record.traces.append(trace("x"))
        with pytest.raises(CheckFailed):
            checks.equals("x", "   ")
        assert record.labels == []


# -- json_equals (issue 33) -------------------------------------------------------------------------

def test_json_equals_fails_with_a_field_by_field_diff_and_records_the_expected_object(record: Record) -> None:
    out = '{"amount": 12.0, "currency": "USD", "merchant": "Cafe Nero"}'
    expected = {"amount": 12.5, "currency": "EUR", "merchant": "Cafe Nero"}
    with recording(record):
        record.traces.append(trace(out))
        with pytest.raises(CheckFailed) as failed:
            checks.json_equals(out, expected)
        assert record.labels == [Label(0, '{"amount": 12.5, "currency": "EUR", "merchant": "Cafe Nero"}')]
        assert [v.score for v in record.verdicts] == [0.0]
    message = str(failed.value)
    assert "amount: expected 12.5, got 12.0" in message and "currency: expected \"EUR\", got \"USD\"" in message
    assert "merchant" not in message.split(" but ", 1)[1].rsplit("; got ", 1)[0]  # equal fields are not listed


def test_json_equals_compares_only_the_named_fields_and_returns_the_object(record: Record) -> None:
    with recording(record):
        data = checks.json_equals('```json\n{"amount": 12.5, "note": "x"}\n```', {"amount": 12.5, "note": "y"},
                                  fields=["amount"])
        assert data == {"amount": 12.5, "note": "x"}
        assert [v.score for v in record.verdicts] == [1.0]
        assert "missing" in fails(checks.json_equals, '{"note": "x"}', {"amount": 1}, fields=["amount"])
        assert "expected JSON" in fails(checks.json_equals, "not json", {"amount": 1})
