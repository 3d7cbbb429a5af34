"""Where the pytest layer keeps its per-item state (the session's key is in session.py)."""

from __future__ import annotations

import pytest

from ..run.markers import MarkerOptions
from ..run.record import CaseOutcome, TestRecord

RECORD_KEY = pytest.StashKey[TestRecord]()  # what the test's current run records
OUTCOME_KEY = pytest.StashKey[CaseOutcome]()  # the outcome of the test's last run
MARKER_KEY = pytest.StashKey[MarkerOptions]()  # its merged promptopt marker


def record_of(item: pytest.Item) -> TestRecord:
    record = item.stash.get(RECORD_KEY, None)
    if record is None:
        record = item.stash[RECORD_KEY] = TestRecord(item.nodeid)
    return record


def marker_of(item: pytest.Item) -> MarkerOptions:
    return item.stash.get(MARKER_KEY, None) or MarkerOptions()
