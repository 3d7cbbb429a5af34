"""`python -m pytest_promptopt merge ...`: the `promptopt` command without its console script."""

from __future__ import annotations

from .report.cli import run

if __name__ == "__main__":
    run()
