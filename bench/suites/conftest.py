"""Makes the suites' helpers importable: benchcases (this folder) and the task definitions in
bench/peers/tasks.py, which the peer runners share so every contender is scored alike."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for path in (HERE, HERE.parent / "peers"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
