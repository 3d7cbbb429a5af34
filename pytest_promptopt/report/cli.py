"""The `promptopt` command (also `python -m pytest_promptopt`): `promptopt merge` fans the JSON
reports of a sharded run in, prints the per-prompt table and gates, writes the merged JSON,
JUnit and HTML reports, and exits with the code one unsharded pytest run would have."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .. import defaults
from ..errors import PromptOptError
from ..run.config import BaselineSettings, fraction
from . import merge_outputs
from .merge import merge
from .summary import write_json

USAGE_ERROR = 4  # pytest's exit code for a usage error: what a bad merge is


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="promptopt", description="pytest-promptopt tools")
    commands = top.add_subparsers(dest="command", required=True)
    cmd = commands.add_parser("merge", help="merge the JSON reports of a sharded run into what one run would report",
                              description=__doc__)
    cmd.add_argument("reports", nargs="+", type=Path, metavar="SHARD.json",
                     help="each shard's --promptopt-report file")
    cmd.add_argument("--expect", type=int, metavar="N", help="the number of shards; fewer or more reports is an error")
    cmd.add_argument("--rootdir", type=Path, default=Path.cwd(),
                     help="the checkout the prompt paths are relative to (default: the current directory)")
    cmd.add_argument("--report", type=Path, metavar="PATH", help="write the merged JSON report here")
    cmd.add_argument("--junitxml", type=Path, metavar="PATH", help="write the merged JUnit XML here")
    cmd.add_argument("--junit-shard", type=Path, action="append", default=[], metavar="PATH",
                     help="a shard's --junitxml file (repeat per shard): its testcases go into --junitxml, "
                          "else the reports' tests do")
    cmd.add_argument("--html", type=Path, metavar="PATH", help="write the merged HTML report here")
    cmd.add_argument("--baseline", type=Path, metavar="PATH", help="compare with this baseline (as --promptopt-baseline)")
    cmd.add_argument("--save-baseline", type=Path, metavar="PATH", help="save the merged run as a baseline")
    cmd.add_argument("--alpha", type=fraction, default=defaults.BASELINE_ALPHA,
                     help=f"McNemar significance level (default {defaults.BASELINE_ALPHA})")
    cmd.add_argument("--max-drop", type=fraction, default=None, help="largest tolerated pass-rate drop (0..1)")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    root = args.rootdir.resolve()
    settings = BaselineSettings(baseline_path=args.baseline, save_path=args.save_baseline, alpha=args.alpha,
                                max_drop=args.max_drop, html_path=args.html)
    try:
        merged = merge(args.reports, root, settings, expect=args.expect)
        if args.report is not None:
            write_json(args.report, merge_outputs.json_payload(merged))
        if args.junitxml is not None:
            merge_outputs.write_text(args.junitxml, merge_outputs.junit_xml(merged, args.junit_shard))
        if args.html is not None:
            merge_outputs.write_text(args.html, merge_outputs.html(merged))
    except (PromptOptError, OSError) as exc:
        print(f"promptopt merge: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    for line in merge_outputs.terminal_lines(merged):
        print(line)
    return merged.exit_code


def run() -> None:
    """The console script's entry point."""
    sys.exit(main())
