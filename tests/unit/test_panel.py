"""Panels: the verdict rule, which cases go to review, the review file, and Krippendorff's alpha."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pytest_promptopt.errors import PromptFileError
from pytest_promptopt.prompts.judgefile import load_judge
from pytest_promptopt.prompts.labels import load_labels, load_reviewed, merged_cases
from pytest_promptopt.run.panel import (
    append_review,
    krippendorff_alpha,
    panel_agreement,
    panel_verdict,
    review_reason,
)
from pytest_promptopt.run.record import Verdict


def members(*scores: float) -> list[tuple[str, Verdict]]:
    return [(f"m{i}", Verdict(s, 0.5, f"r{i}")) for i, s in enumerate(scores)]


def test_majority_is_the_side_most_members_take_and_an_even_split_fails() -> None:
    assert panel_verdict(members(0.9, 0.8, 0.1), "majority", 0.5).passed
    assert not panel_verdict(members(0.9, 0.2, 0.1), "majority", 0.5).passed
    assert not panel_verdict(members(0.9, 0.1), "majority", 0.5).passed  # 1 of 2 is no majority
    verdict = panel_verdict(members(0.9, 0.8, 0.1), "majority", 0.5)
    assert verdict.members == (("m0", 0.9), ("m1", 0.8), ("m2", 0.1)) and "2 of 3 members pass" in verdict.reason


def test_mean_is_the_mean_score_against_the_threshold() -> None:
    verdict = panel_verdict(members(0.9, 0.3, 0.3), "mean", 0.5)
    assert verdict.score == pytest.approx(0.5) and verdict.passed


def test_review_takes_splits_and_verdicts_near_the_threshold_only() -> None:
    assert "disagrees" in (review_reason(panel_verdict(members(0.9, 0.9, 0.1), "majority", 0.5)) or "")
    assert "within 0.10" in (review_reason(panel_verdict(members(0.55, 0.58, 0.56), "mean", 0.5)) or "")
    assert review_reason(panel_verdict(members(0.9, 0.95, 0.8), "majority", 0.5)) is None


def test_the_review_file_is_the_labels_format_and_filled_lines_become_labels(tmp_path: Path) -> None:
    review = tmp_path / "polite.review.jsonl"
    assert append_review(review, "Read the FAQ.", None, "the panel disagrees")
    assert not append_review(review, "Read the FAQ.", None, "again")  # a case is listed once
    assert append_review(review, "Hello!", "Hi", "near the threshold")
    lines = [json.loads(line) for line in review.read_text().splitlines()]
    assert lines[0] == {"output": "Read the FAQ.", "verdict": None, "note": "the panel disagrees"}
    assert load_reviewed(review) == ()  # nothing labelled yet
    lines[0]["verdict"] = "fail"  # a human labels one
    review.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    (reviewed,) = load_reviewed(review)
    assert reviewed.output == "Read the FAQ." and reviewed.score == 0.0
    labels = tmp_path / "polite.labels.jsonl"
    labels.write_text('{"output": "Thanks!", "verdict": "pass"}\n{"output": "No.", "verdict": "fail"}\n')
    assert [c.output for c in merged_cases(load_labels(labels), load_reviewed(review))] == ["Thanks!", "No.", "Read the FAQ."]


def test_alpha_is_the_krippendorff_package_on_its_reference_data() -> None:
    nan = None  # Krippendorff (2011), four coders, twelve units, values missing: alpha 0.743 nominal
    data = [[1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan], [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
            [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan], [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan]]
    assert krippendorff_alpha(data, "nominal") == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha([[1, 1, 1], [1, 1, 1]], "nominal") is None  # one value: undefined, not 1


def test_agreement_counts_splits_and_gives_both_alphas() -> None:
    cases = [({"a": 0.9, "b": 0.8}, 0.5), ({"a": 0.1, "b": 0.2}, 0.5), ({"a": 0.9, "b": 0.1}, 0.5)]
    agreement = panel_agreement(cases)
    assert agreement.models == ("a", "b") and agreement.verdicts == 3 and agreement.disagreed == 1
    assert agreement.alpha_pass_fail is not None and not math.isnan(agreement.alpha_pass_fail)
    assert agreement.alpha_scores == pytest.approx(krippendorff_alpha([[0.9, 0.1, 0.9], [0.8, 0.2, 0.1]], "interval"))


@pytest.mark.parametrize(("body", "field"), [("models: [a]\n", "models"), ("models: [a, a]\n", "models"),
                                            ("models: [a, b]\nmodel: c\n", "models"),
                                            ("models: [a, b]\npanel: vote\n", "panel"), ("panel: mean\n", "panel")])
def test_a_bad_panel_names_the_field(tmp_path: Path, body: str, field: str) -> None:
    (tmp_path / "j.yaml").write_text("criteria: is polite\n" + body)
    with pytest.raises(PromptFileError) as info:
        load_judge(tmp_path / "j.yaml")
    assert info.value.field == field


def test_a_panel_loads(tmp_path: Path) -> None:
    (tmp_path / "j.yaml").write_text("criteria: is polite\nmodels: [a, b, c]\npanel: mean\n")
    judge = load_judge(tmp_path / "j.yaml")
    assert judge.models == ("a", "b", "c") and judge.panel == "mean" and judge.is_panel
    assert judge.review_path == tmp_path / "j.review.jsonl"
