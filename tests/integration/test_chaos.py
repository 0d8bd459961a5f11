"""The chaos suite's reduced set on the session's cluster (issue 17): one SIGKILL of the operator
while five services are in scale-up, promotion, drain, a spot notice and a planned window; the
three Prometheus faults (stopped, 20 s slower, one of four pods out of the scrape) at the same
time; the API server blackholed for 20 s. `make chaos` runs the full set (tests/chaos) and writes
reports/reliability.

Asserted: every trial converges after its fault clears, and every loss column is zero: no pod
orphaned or duplicated, none left out of the Service, no scale-down on missing or partial data,
no request dropped, and one MetricsUnavailable Warning per cause."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from gpufleet.devenv.prometheus import PrometheusServer
from tests.chaos import report
from tests.chaos.harness import Chaos, Config
from tests.integration.conftest import LOGS
from tests.integration.support import CLUSTER, Cluster

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus]


def test_faults_lose_nothing_and_the_fleet_converges(
        cluster: Cluster, emulator: str, file_sd: Path, prometheus: PrometheusServer, tmp_path: Path) -> None:
    seed = random.randrange(1 << 31)
    print(f"chaos: seed {seed}")
    cfg = Config(seed=seed, kill_rounds=1, api_restarts=0, etcd_restarts=0, blackhole_s=20, prometheus_fault_s=45,
                 storm_notices=(), cluster_name=CLUSTER, extra_nodes=2, settle_timeout_s=150)
    chaos = Chaos(cluster, emulator, file_sd, prometheus.url, tmp_path, cfg)
    try:
        trials = chaos.run()
    finally:
        chaos.close()
    assert not chaos.skipped, f"seed {seed}: {chaos.skipped}"
    rows = report.write(tmp_path / "report", trials, cfg, command="pytest tests/integration/test_chaos.py",
                        duration_s=0, machine="the test session")
    print((tmp_path / "report" / "README.md").read_text())
    assert {t.fault.split(":")[0] for t in trials} >= {"kill -9 operator", "prometheus"}
    assert len(trials) == 5 + 3 + 8  # five phases, three Prometheus faults, the blackhole on every service
    # Each loss the emulator counted, with the pod and why (its log): what to look at when a drop fails.
    log = LOGS.get("emulator")
    drops = [line for line in log.read_text().splitlines() if "dropp" in line][-20:] if log else []
    for t in trials:
        assert t.converged, f"seed {seed}: {t.fault} / {t.service} did not converge: {t.detail}"
        assert (t.orphaned, t.duplicated, t.left_out, t.blind_scale_downs, t.below_need, t.dropped) == (0,) * 6, \
            f"seed {seed}: {t}\nemulator: {drops}"
        assert t.warnings == t.warning_causes, f"seed {seed}: more than one Warning per cause: {t}"
    prometheus_trials = [t for t in trials if t.fault.startswith("prometheus")]
    assert all(t.warnings >= 1 for t in prometheus_trials), prometheus_trials  # the outage was reported
    assert all(r.losses == 0 for r in rows)
