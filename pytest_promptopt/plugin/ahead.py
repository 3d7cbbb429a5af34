"""The pytest side of sending calls ahead (see `ahead.py` in the core): which items, when, the
probe pass of tests without a log (see `llm/probe.py`), and the logs written back after the run."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import pytest

from ..llm.cache import RecordMode
from ..llm.probe import Probe, ProbeStop
from ..run.ahead import AheadReport, CallStore, send_ahead, send_probed
from ..run.calllog import RecordedCall
from ..run.runtime import Runtime
from .program import quiet_rerun
from .stash import OUTCOME_KEY, RECORD_KEY, marker_of

LM_FIXTURES = frozenset({"llm", "judge", "promptopt_runtime"})  # a test that uses none makes no LM call


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
    """Send the selected items' logged calls ahead, then probe the items without a log and send
    their first uncached calls; None when there is nothing to send for."""
    logs: dict[str, tuple[RecordedCall, ...]] = {}
    unlogged: list[pytest.Item] = []
    for item in session.items:
        calls = store.get(item.nodeid, marker_of(item).repeats)
        if calls:
            logs[item.nodeid] = calls
        elif calls is None and LM_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            unlogged.append(item)  # an empty log: the test made no LM call last time
    report = send_ahead(runtime, logs) if logs else None
    if unlogged and should_probe(session.config, runtime):
        probed = _probe_and_send(runtime, unlogged)
        report = probed if report is None else report.plus(probed)
    if report is None:
        return None
    reporter: Any = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and report.sent + report.failed:
        reporter.write_line(f"[promptopt] {report.line()}")
    return report


def should_probe(config: pytest.Config, runtime: Runtime) -> bool:
    """--promptopt-probe=auto, and no debugger (a probe's failures are not the test's own), no
    --setup-only/--setup-plan/--setup-show (nothing calls the model, or each setup is shown), and
    no -x/--maxfail/--sw (the run may stop at its first failure: probing first would run every test)."""
    option = config.option
    return (runtime.settings.probe == "auto" and not option.usepdb and not getattr(option, "trace", False)
            and not option.setuponly and not option.setupplan and not option.setupshow
            and not option.maxfail and not getattr(option, "stepwise", False))


def _probe_and_send(runtime: Runtime, items: Sequence[pytest.Item]) -> AheadReport:
    """Run each item up to its first LM call the cache cannot answer, unreported, then send those calls ahead."""
    probe = Probe()
    config = items[0].config
    plain_reports = _PlainProbeReports()
    config.pluginmanager.register(plain_reports, f"promptopt-probe-reports-{id(plain_reports)}")
    try:
        with runtime.probing(probe), quiet_rerun([config]):
            _probe_all(items, probe)
    finally:
        config.pluginmanager.unregister(plain_reports)
    return send_probed(runtime, probe.misses, len(items))


def _probe_all(items: Sequence[pytest.Item], probe: Probe) -> None:
    for i, item in enumerate(items):
        probe.current = item.nodeid
        # the last probe tears every fixture down: the real run starts as if nothing had run
        if not _probe_one(item, items[i + 1] if i + 1 < len(items) else None):
            break


class _PlainProbeReports:
    """A probed test stopped at its first uncached call gets a plain failed report: pytest would
    format the stop's traceback (about 20 ms a test, most of a probe's cost) for a report that
    the probe throws away. Registered only during the probe pass."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport | None:
        if call.excinfo is None or not call.excinfo.errisinstance(ProbeStop):
            return None
        return pytest.TestReport(item.nodeid, item.location, {}, "failed", "stopped by the probe", call.when,
                                 duration=call.duration, start=call.start, stop=call.stop)


def _probe_one(item: pytest.Item, nextitem: pytest.Item | None) -> bool:
    """One unreported run of `item`; what it leaves on the item (captured output, JUnit
    properties, its record and outcome) is dropped so the real run reports only its own. False
    when the test called pytest.exit(): the probe pass ends there (its fixtures torn down) and
    the run proper meets the exit where a one-by-one run would."""
    sections, properties = list(item._report_sections), list(item.user_properties)
    try:
        item.ihook.pytest_runtest_protocol(item=item, nextitem=nextitem)
        return True
    except pytest.exit.Exception:
        with contextlib.suppress(Exception):  # a teardown error of the probe is not the run's
            item.ihook.pytest_runtest_teardown(item=item, nextitem=None)
        if isinstance(item, pytest.Function):
            item._initrequest()  # fresh fixture values for the run proper, as after a whole protocol
        return False
    finally:
        item._report_sections[:], item.user_properties[:] = sections, properties
        for key in (RECORD_KEY, OUTCOME_KEY):
            if key in item.stash:
                del item.stash[key]


def log_calls(session: pytest.Session, store: CallStore) -> None:
    """Store the calls of every item that ran (an item that did not run keeps its old log)."""
    logs = {}
    for item in session.items:
        record = item.stash.get(RECORD_KEY, None)
        if record is not None:
            logs[item.nodeid] = record.call_log.calls
    store.put(logs)
