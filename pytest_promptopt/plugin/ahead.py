"""The pytest side of sending calls ahead (see `ahead.py` in the core): which items, when, and
the logs written back after the run."""

from __future__ import annotations

from typing import Any

import pytest

from ..run.ahead import AheadReport, CallStore, send_ahead
from ..llm.cache import RecordMode
from ..run.calllog import RecordedCall
from ..run.runtime import Runtime
from .stash import RECORD_KEY, marker_of


def should_send_ahead(session: pytest.Session, runtime: Runtime) -> bool:
    """In one process (xdist workers pick their items one at a time), with a cache that reads and
    writes, more than one call in flight allowed, and tests about to run."""
    config = session.config
    settings = runtime.settings
    if hasattr(config, "workerinput") or config.pluginmanager.has_plugin("dsession"):
        return False
    if settings.record_mode is not RecordMode.NORMAL or not runtime.cache.enabled:
        return False  # replay makes no calls; refresh and off would not read what was sent ahead
    if config.option.collectonly or not session.items:
        return False
    if session.testsfailed and not config.option.continue_on_collection_errors:
        return False  # collection errors: the run stops before any test
    return max(settings.concurrency_for(role) for role in ("task", "judge")) > 1


def send_ahead_for(session: pytest.Session, runtime: Runtime, store: CallStore) -> AheadReport | None:
    """Send the selected items' logged calls ahead; None when there is nothing to send for."""
    logs: dict[str, tuple[RecordedCall, ...]] = {}
    for item in session.items:
        calls = store.get(item.nodeid, marker_of(item).repeats)
        if calls:
            logs[item.nodeid] = calls
    if not logs:
        return None  # the first run (or a suite new to this cache): every call runs inline and is logged
    report = send_ahead(runtime, logs)
    reporter: Any = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and report.sent + report.failed:
        reporter.write_line(f"[promptopt] {report.line()}")
    return report


def log_calls(session: pytest.Session, store: CallStore) -> None:
    """Store the calls of every item that ran (an item that did not run keeps its old log)."""
    logs = {}
    for item in session.items:
        record = item.stash.get(RECORD_KEY, None)
        if record is not None:
            logs[item.nodeid] = record.call_log.calls
    store.put(logs)
