"""What the reports say (issue 26): costs keep their significant digits, gate wording never
contradicts itself, checks.close_to takes a number, and the hint for the missing `local` extra
installs from where this package came from."""

from __future__ import annotations

import importlib.metadata
import json
import sys

import pytest

from pytest_promptopt import checks
from pytest_promptopt.llm.local import install_hint
from pytest_promptopt.report.compare import compare
from pytest_promptopt.report.summary import money
from pytest_promptopt.run.baseline import Baseline, BaselineCase, PromptCases


def test_a_priced_cost_keeps_its_significant_digits() -> None:
    assert money(0.000123456, True) == "$0.000123"  # was $0.0001; a cheaper call was $0.0000
    assert money(0.0000012, True) == "$0.00000120"
    assert money(9.0, True) == "$9.0000" and money(0.05, True) == "$0.0500"
    assert money(0.0, True) == "$0.0000"  # nothing spent (cached calls)
    assert money(0.0001, False) == "-"  # no price: unknown, not zero


def cases(*rows: tuple[str, bool]) -> Baseline:
    return Baseline({"p.yaml": PromptCases("p.yaml", "d", {n: BaselineCase(n, ok, float(ok), "out") for n, ok in rows})})


def test_a_significant_improvement_is_called_one() -> None:
    then = cases(*[(f"t{i}", False) for i in range(20)])
    now = cases(*[(f"t{i}", True) for i in range(20)])
    (p,) = compare(then, now).prompts
    assert p.gate_reason.startswith("ok: McNemar exact p = 1.907e-06 on 0 now failing vs 20 now passing, "
                                    "a significant improvement at alpha 0.05 (not a drop)")
    assert ">= alpha" not in p.gate_reason  # p is below alpha: saying >= contradicted the number
    (same,) = compare(then, then).prompts
    assert "no more failing than passing (not a drop)" in same.gate_reason


def test_close_to_takes_a_number_or_refuses_with_the_fix() -> None:
    assert checks.close_to(2.5000001, 2.5) == 2.5000001
    assert checks.close_to(3, 3.0) == 3.0
    assert checks.close_to("about 2,000.5 units", 2000.5) == 2000.5
    with pytest.raises(AssertionError, match="close_to takes the output as text or a number, not NoneType"):
        checks.close_to(None, 1.0)  # type: ignore[arg-type]
    with pytest.raises(AssertionError, match=r"expected 1 ± 1e-06, found 5.0; got '5'"):
        checks.close_to(5, 1)


def test_the_local_extra_hint_installs_from_where_the_package_came_from() -> None:
    hint = install_hint()
    assert hint.startswith(f"{sys.executable} -m pip install ")  # this interpreter's environment
    origin = json.loads(importlib.metadata.distribution("pytest-promptopt").read_text("direct_url.json") or "{}")
    if origin.get("url", "").startswith("file://"):  # installed from a checkout (pip install -e .)
        folder = origin["url"][len("file://"):]
        assert f'"{folder}[local]"' in hint
        assert ("-e " in hint) is bool(origin.get("dir_info", {}).get("editable"))
    else:
        assert "'pytest-promptopt[local]'" in hint
