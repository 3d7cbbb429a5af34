"""A judges' report from one run: a biased pairwise judge and a panel of three, on a scripted server.

    python bench/judges_report.py [--pairs 150] [--p-first 0.75]

Writes a small suite to a temporary folder and runs pytest on it against the scripted
OpenAI-compatible server on 127.0.0.1 (`pytest_promptopt.testing`): each pairwise call is
answered 'A' (the output shown first) with probability --p-first whatever it is shown (true flip
rate p^2 + (1-p)^2, true first-position rate p), and a panel judge file names three models, two of
which agree while the third also passes an apology. Prints the run's `promptopt: judges` section
and the JSON report's pairwise and panel figures.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from pytest_promptopt.testing import ScriptedServer, biased_pairwise

PANEL = """\
criteria: The reply is polite.
threshold: 0.5
models: [judge-a, judge-b, judge-c]
"""
TESTS = """\
import pytest
from pytest_promptopt import load_judge

polite = load_judge("judges/polite.yaml")

@pytest.mark.parametrize("i", range({pairs}))
def test_pair(judge, i):
    judge.pairwise(f"answer {{i}}: alpha", f"answer {{i}}: beta", "Answers the question better.")

@pytest.mark.parametrize("reply", ["Thanks, here you go.", "Go away.", "Sorry, no.", "Thanks. Sorry for the wait.", "ok"])
def test_reply(judge, reply):
    judge.grade(reply, polite)
"""


def panel_member(model: str, output: str) -> float:
    """judge-a and judge-b agree; judge-c also passes an apology."""
    text = output.casefold()
    if "thanks" in text or (model == "judge-c" and "sorry" in text):
        return 0.9
    return 0.55 if text == "ok" else 0.1


def responder(p_first: float) -> Any:
    pairwise = biased_pairwise(p_first)

    def answer(messages: list[dict[str, str]], body: dict[str, Any]) -> str:
        fenced = re.search(r"<(OUTPUT-[0-9a-f]+)>\n(.*)\n</\1>", messages[-1]["content"], re.DOTALL)
        if fenced is None:  # two fenced outputs, A and B: a pairwise request
            return pairwise(messages, body)
        return f"score: {panel_member(body['model'], fenced.group(2))}"
    return answer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=150)
    parser.add_argument("--p-first", type=float, default=0.75)
    args = parser.parse_args()
    server = ScriptedServer(responder(args.p_first)).start()
    try:
        with tempfile.TemporaryDirectory() as folder:
            root = Path(folder)
            (root / "judges").mkdir()
            (root / "judges" / "polite.yaml").write_text(PANEL, encoding="utf-8")
            (root / "test_judges.py").write_text(TESTS.format(pairs=args.pairs), encoding="utf-8")
            (root / "pytest.ini").write_text(f"[pytest]\npromptopt_base_url = {server.base_url}\n"
                                             "promptopt_model = scripted\n", encoding="utf-8")
            run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                                  "--promptopt-report=report.json"], cwd=root, capture_output=True, text=True, check=False,
                                 env={"PATH": "/usr/bin:/bin", "HOME": folder, "PYTHONPATH": ":".join(sys.path)})
            out = run.stdout
            at = out.find("promptopt: judges")
            section = out[out.rfind("\n", 0, at) + 1:] if at >= 0 else out
            print(section.split("\n=", 1)[0].rstrip())
            report = json.loads((root / "report.json").read_text())
            for row in report["judges"]:
                for key in ("pairwise", "panel"):
                    if row.get(key):
                        print(json.dumps({"judge": row["judge"], key: row[key]}, sort_keys=True))
            return run.returncode
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
