"""Round trips for `--promptopt-calibrate`, the judges' section of every report and the gate.

The judge is a scripted server with known error rates: it knows the right intent of every
BANKING77 message in the shipped labelled set, and per graded output (by the output's digest)
says pass to a right label with probability 0.9 (TPR) and fail to a wrong one with probability
0.7 (TNR). The truth of every case is known, so what the card and the corrected pass rate claim
can be checked against it.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from test_plugin_judge import _clean_env, output_of  # noqa: F401 - autouse fixture

from pytest_promptopt.testing import ScriptedServer

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "judges"
TPR, TNR = 0.9, 0.7
LABELS = [json.loads(line) for line in (EXAMPLE / "judges" / "intent.labels.jsonl").read_text().splitlines()]
RIGHT = {c["inputs"]["text"]: c["inputs"]["label"] if c["verdict"] == "pass" else c["note"].rsplit(" ", 1)[1]
         for c in LABELS}
MESSAGE = re.compile(r'Customer message: "(.*)"\nIntent label: (\S+)', re.DOTALL)


def uniform(text: str) -> float:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 16**8


def noisy_judge(messages: list[dict[str, str]], body: dict[str, Any]) -> str:
    output = output_of(messages)
    m = MESSAGE.fullmatch(output)
    if m is None:  # an inline-criteria test: grades anything 0.2
        return "score: 0.2\nreason: not a labelled message"
    right = RIGHT[m.group(1)] == m.group(2)
    says_pass = uniform(output) < TPR if right else uniform(output) >= TNR
    return "score: 0.9\nreason: label fits" if says_pass else "score: 0.1\nreason: label does not fit"


def suite_cases() -> list[dict[str, Any]]:
    """240 graded answers, none a labelled output: each labelled message with the other label
    kind (a right one where the label was wrong, a wrong one where it was right). True rate 0.5."""
    intents = sorted(set(RIGHT.values()))
    out = []
    for c in LABELS:
        text, right = c["inputs"]["text"], RIGHT[c["inputs"]["text"]]
        label = right if c["verdict"] == "fail" else next(x for x in intents if x != right)
        out.append({"output": f'Customer message: "{text}"\nIntent label: {label}', "right": label == right})
    return out


SUITE_TESTS = """
import json
from pathlib import Path
import pytest
from pytest_promptopt import load_judge

intent_judge = load_judge("judges/intent.yaml")
CASES = [json.loads(line) for line in Path(__file__).with_name("suite.jsonl").read_text().splitlines()]

@pytest.mark.parametrize("case", CASES)
def test_answer(case, judge):
    judge(case["output"], intent_judge)

def test_inline(judge):
    judge("anything", "is a greeting")
"""


@pytest.fixture
def calibrating(pytester: pytest.Pytester, scripted: ScriptedServer) -> pytest.Pytester:
    scripted.responder = noisy_judge
    pytester.makeini(f"""
        [pytest]
        promptopt_base_url = {scripted.base_url}
        promptopt_model = scripted
        promptopt_retries = 1
        """)
    shutil.copytree(EXAMPLE / "judges", pytester.path / "judges")
    (pytester.path / "judges" / "intent.card.json").unlink(missing_ok=True)
    (pytester.path / "suite.jsonl").write_text("".join(json.dumps(c) + "\n" for c in suite_cases()))
    pytester.makepyfile(test_suite=SUITE_TESTS)
    return pytester


def read_card(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "judges" / "intent.card.json").read_text())


def test_calibration_recovers_the_judges_error_rates(calibrating: pytest.Pytester, scripted: ScriptedServer) -> None:
    result = calibrating.runpytest("--promptopt-calibrate")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes()  # calibration only: no test ran
    assert scripted.count == 240
    result.stdout.fnmatch_lines(["*promptopt: calibration*", "intent.yaml: 240 labels (120 pass, 120 fail): agreement *"])
    card = read_card(calibrating.path)
    assert (card["labels"], card["positives"], card["negatives"]) == (240, 120, 120)
    m = card["metrics"]
    assert m["tpr"]["low"] <= TPR <= m["tpr"]["high"] and m["tnr"]["low"] <= TNR <= m["tnr"]["high"]
    true_kappa = (TPR + TNR) - 1  # balanced classes: kappa = Youden's J
    assert m["kappa"]["low"] <= true_kappa <= m["kappa"]["high"]
    assert m["balanced_accuracy"]["low"] <= (TPR + TNR) / 2 <= m["balanced_accuracy"]["high"]
    assert set(card["confusion"]) == {"tp", "fn", "fp", "tn"} and card["threshold"]["tuned_on"] == 120
    assert card["identity"]["model"] == "scripted" and card["identity"]["threshold"] == 0.5
    assert "Wilson" in m["tpr"]["method"] and "bootstrap" in m["kappa"]["method"]
    calibrating.runpytest("--promptopt-calibrate")  # again: through the cache, no new call
    assert scripted.count == 240


def test_the_corrected_pass_rate_recovers_the_truth_where_the_raw_rate_does_not(
        calibrating: pytest.Pytester) -> None:
    calibrating.runpytest("--promptopt-calibrate")
    result = calibrating.runpytest("--promptopt-report=report.json", "--promptopt-html=report.html")
    report = json.loads((calibrating.path / "report.json").read_text())
    (rate,) = report["corrected_pass_rates"]
    raw, corrected = rate["raw_pass_rate"], rate["corrected_pass_rate"]
    truth = sum(c["right"] for c in suite_cases()) / 240
    assert truth == 0.5 and rate["verdicts"] == 240
    assert not raw["low"] <= truth <= raw["high"], raw  # the judge's word alone is off
    assert corrected["low"] <= truth <= corrected["high"], corrected
    judges = {j["judge"]: j for j in report["judges"]}
    calibrated, inline = judges["judges/intent.yaml"], judges['inline "is a greeting"']
    assert (calibrated["status"], calibrated["gates"], calibrated["labels"]) == ("calibrated", True, 240)
    assert calibrated["kappa"]["low"] <= calibrated["kappa"]["value"] <= calibrated["kappa"]["high"]
    assert (inline["status"], inline["gates"], inline["labels"]) == ("uncalibrated", True, None)
    result.stdout.fnmatch_lines(["*promptopt: judges*", "judge*status*gates*labels*agreement*kappa*",
                                 "judges/intent.yaml*calibrated*yes*240*", 'inline "is a greeting"*uncalibrated*yes*-*',
                                 "*corrected for the judge's error*"])
    page = (calibrating.path / "report.html").read_text()
    assert '<section id="judges">' in page and "judges/intent.yaml" in page and "uncalibrated" in page


def test_a_changed_judge_makes_its_card_stale(calibrating: pytest.Pytester) -> None:
    calibrating.runpytest("--promptopt-calibrate")
    path = calibrating.path / "judges" / "intent.yaml"
    path.write_text(path.read_text().replace("threshold: 0.5", "threshold: 0.6"))
    calibrating.runpytest("--promptopt-report=report.json", "-k", "inline or 0")
    judges = {j["judge"]: j for j in json.loads((calibrating.path / "report.json").read_text())["judges"]}
    stale = judges["judges/intent.yaml"]
    assert stale["status"] == "stale" and "threshold changed" in stale["reason"]


def test_advisory_judges_are_shown_not_counted(calibrating: pytest.Pytester) -> None:
    args = ("--promptopt-report=report.json", "-k", "inline", "--promptopt-min-pass-rate=1")
    calibrating.runpytest(*args).assert_outcomes(failed=1)  # default: an uncalibrated judge gates, as before
    result = calibrating.runpytest(*args, "--promptopt-judge-uncalibrated=advisory")
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.OK
    report = json.loads((calibrating.path / "report.json").read_text())
    (verdict,) = report["tests"][0]["verdicts"]
    assert verdict["advisory"] is True and verdict["score"] == 0.2
    (judge_row,) = report["judges"]
    assert judge_row["gates"] is False and judge_row["failed"] == 1
    result.stdout.fnmatch_lines(['inline "is a greeting": no calibration card; uncalibrated judges: advisory'])


def test_a_calibrated_judge_below_the_kappa_bar_is_advisory(calibrating: pytest.Pytester) -> None:
    calibrating.runpytest("--promptopt-calibrate")
    result = calibrating.runpytest("--promptopt-report=report.json", "--promptopt-judge-min-kappa=0.9", "-k", "not inline")
    result.assert_outcomes(passed=240)  # the judge's fails are shown, not counted
    report = json.loads((calibrating.path / "report.json").read_text())
    (row,) = report["judges"]
    assert row["status"] == "calibrated" and row["gates"] is False and "below the 0.90" in row["reason"]
    (prompt_row,) = [p for p in report["prompts"] if p["prompt"] == "<judge>"]
    assert prompt_row["advisory"] == 240 and prompt_row["cases"] == 0


def test_labels_with_one_class_stop_calibration_naming_the_file(calibrating: pytest.Pytester) -> None:
    labels = calibrating.path / "judges" / "intent.labels.jsonl"
    labels.write_text("".join(line + "\n" for line in labels.read_text().splitlines() if '"pass"' in line))
    result = calibrating.runpytest("--promptopt-calibrate")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*intent.labels.jsonl (field 'verdict'): all 120 cases are 'pass'*"])
