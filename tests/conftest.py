"""Suite-wide rules."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

# Hypothesis's per-example deadline (200 ms) and its too-slow health check are wall-clock limits:
# on a loaded 2-core machine (two test workers beside a cluster each) they fail properties that
# hold. Speed is measured by the benchmarks, never asserted by a unit test.
settings.register_profile("gpufleet", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("gpufleet")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    # `make test` installs every tool the suite needs, so in CI a skip can only mean a missing
    # install step: count it as a failure instead of letting a suite silently not run.
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI (a dependency is missing): {report.longrepr}"
