"""The pytest layer of pytest-promptopt (the `pytest11` entry point): options, settings, stash
keys, fixtures, hooks, the session, and the program that re-runs test items for `--optimize`.
Nothing outside this subpackage imports pytest; the core is called with plain values and
returns data."""

from __future__ import annotations

from .calibrate import pytest_runtestloop
from .fixtures import judge, llm, promptopt_runtime
from .hooks import (
    pytest_addhooks,
    pytest_addoption,
    pytest_assertrepr_compare,
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_configure_node,
    pytest_pyfunc_call,
    pytest_report_header,
    pytest_runtest_call,
    pytest_runtest_makereport,
    pytest_runtest_setup,
    pytest_sessionstart,
)
from .session import SESSION_KEY
from .stash import RECORD_KEY

__all__ = ["RECORD_KEY", "SESSION_KEY", "judge", "llm", "promptopt_runtime", "pytest_addhooks", "pytest_addoption",
           "pytest_assertrepr_compare", "pytest_collection_modifyitems", "pytest_configure", "pytest_configure_node",
           "pytest_pyfunc_call", "pytest_report_header", "pytest_runtest_call", "pytest_runtestloop",
           "pytest_runtest_makereport", "pytest_runtest_setup", "pytest_sessionstart"]
