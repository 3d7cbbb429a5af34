"""Judge files and labelled sets: loading, and errors that name the file, line, field and fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_promptopt import Judge, load_judge
from pytest_promptopt.errors import PromptFileError, PromptOptError
from pytest_promptopt.prompts.labels import MIN_CASES_PER_CLASS, load_labels


def write_labels(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_a_judge_file_loads_every_field(tmp_path: Path) -> None:
    write_labels(tmp_path / "polite.labels.jsonl", [{"output": "Thanks!", "verdict": "pass"}])
    (tmp_path / "polite.yaml").write_text(
        "# a judge\ncriteria: The reply is polite.\nthreshold: 0.6\nmode: yesno\nmodel: grader-2\n"
        "system: |\n  You grade replies.\nlabels: polite.labels.jsonl\n", encoding="utf-8")
    judge = load_judge(tmp_path / "polite.yaml")
    assert isinstance(judge, Judge)
    assert (judge.criteria, judge.threshold, judge.mode, judge.model) == ("The reply is polite.", 0.6, "yesno", "grader-2")
    assert judge.system == "You grade replies.\n"
    assert judge.labels_path == tmp_path / "polite.labels.jsonl"
    assert judge.card_path == tmp_path / "polite.card.json"
    with pytest.raises(AttributeError):
        judge.criteria = "x"  # type: ignore[misc]


def test_a_relative_path_is_found_next_to_the_calling_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    here = Path(__file__).parent
    monkeypatch.chdir(tmp_path)  # not where the file is: the caller's folder is looked at first
    (here / "_tmp_judge.yaml").write_text("criteria: ok\n", encoding="utf-8")
    try:
        assert load_judge("_tmp_judge.yaml").path == (here / "_tmp_judge.yaml").resolve()
    finally:
        (here / "_tmp_judge.yaml").unlink()


def test_defaults_leave_mode_model_and_threshold_to_the_settings(tmp_path: Path) -> None:
    (tmp_path / "j.yaml").write_text("criteria: ok\nmode: auto\nmodel: default\n", encoding="utf-8")
    judge = load_judge(tmp_path / "j.yaml")
    assert (judge.threshold, judge.mode, judge.model, judge.system, judge.labels) == (None, None, None, None, None)


@pytest.mark.parametrize("body,field,line,fix", [
    ("threshold: 0.5\n", "criteria", None, "criteria: <text>"),
    ("criteria: ok\nthreshold: 7\n", "threshold", 2, "threshold: 0.7"),
    ("criteria: ok\nmode: maybe\n", "mode", 2, "mode: score"),
    ("criteria: ok\ncriterion: typo\n", "criterion", 2, "remove or rename"),
    ("criteria: ok\nlabels: ../elsewhere.jsonl\n", "labels", 2, "labels: j.labels.jsonl"),
    ("criteria: ok\nlabels: missing.jsonl\n", "labels", 2, "create it"),
])
def test_judge_file_errors_name_the_field_line_and_fix(tmp_path: Path, body: str, field: str, line: int | None,
                                                        fix: str) -> None:
    (tmp_path / "j.yaml").write_text(body, encoding="utf-8")
    with pytest.raises(PromptFileError) as info:
        load_judge(tmp_path / "j.yaml")
    assert info.value.field == field and info.value.line == line
    assert str(tmp_path / "j.yaml") in str(info.value) and fix in str(info.value)


def test_a_labelled_set_reads_verdicts_scores_and_optional_fields(tmp_path: Path) -> None:
    path = write_labels(tmp_path / "l.jsonl", [
        {"output": "a", "verdict": "pass", "expected": "A", "inputs": {"text": "q"}, "note": "why"},
        {"output": "b", "verdict": "FAIL"},
        {"output": "c", "verdict": 0.8},
    ])
    labels = load_labels(path)
    assert [c.score for c in labels.cases] == [1.0, 0.0, 0.8]
    assert [c.line for c in labels.cases] == [1, 2, 3]
    assert labels.cases[0].inputs == {"text": "q"} and labels.cases[0].note == "why"
    assert labels.truth(0.7) == [True, False, True] and labels.truth(0.9) == [True, False, False]
    assert len(labels.digest) == 64


@pytest.mark.parametrize("rows,line,field,fix", [
    ([{"output": "a", "verdict": "pass"}, {"output": "b", "verdict": "maybe"}], 2, "verdict", '"verdict": "pass"'),
    ([{"output": "a", "verdict": 2}], 1, "verdict", "a score from 0 to 1"),
    ([{"verdict": "pass"}], 1, "output", '"output"'),
    ([{"output": "  ", "verdict": "pass"}], 1, "output", '"output"'),
    ([{"output": "a", "verdict": "pass"}, {"output": "a", "verdict": "fail"}], 2, "output", "remove one"),
    ([{"output": "a", "verdict": "pass", "label": "x"}], 1, "label", "remove or rename"),
])
def test_labelled_set_errors_name_the_line_field_and_fix(tmp_path: Path, rows: list[dict[str, object]], line: int,
                                                         field: str, fix: str) -> None:
    path = write_labels(tmp_path / "l.jsonl", rows)
    with pytest.raises(PromptFileError) as info:
        load_labels(path)
    assert (info.value.line, info.value.field) == (line, field)
    assert f"{path}:{line}" in str(info.value) and fix in str(info.value)


def test_a_line_that_is_not_json_is_named(tmp_path: Path) -> None:
    path = tmp_path / "l.jsonl"
    path.write_text('{"output": "a", "verdict": "pass"}\n\n{"output": "b", verdict: fail}\n', encoding="utf-8")
    with pytest.raises(PromptFileError, match=r"l\.jsonl:3: not a JSON object"):
        load_labels(path)


def test_one_class_only_is_an_error_and_few_cases_a_warning(tmp_path: Path) -> None:
    one_class = load_labels(write_labels(tmp_path / "a.jsonl", [{"output": str(i), "verdict": "pass"} for i in range(5)]))
    with pytest.raises(PromptFileError, match="(?s)all 5 cases are 'pass'.*add cases of the other class"):
        one_class.check_classes(0.7)
    few = load_labels(write_labels(tmp_path / "b.jsonl", [{"output": "x", "verdict": "fail"},
                                                          *({"output": str(i), "verdict": "pass"} for i in range(25))]))
    warnings = few.check_classes(0.7)
    assert len(warnings) == 1 and "only 1 'fail' case(s)" in warnings[0] and str(MIN_CASES_PER_CLASS) in warnings[0]


def test_a_labels_file_that_is_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    """A labels file is read by the one reader of user files: a FIFO planted in its place is
    refused at once (opening it for reading would wait for a writer forever)."""
    import os

    fifo = tmp_path / "polite.labels.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(PromptOptError, match="FIFO"):
        load_labels(fifo)
