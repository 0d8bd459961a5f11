"""The quota benchmark (`make bench-quota`) in a tiny version: three services for one hour, the
lockstep arbitration against static HPAs; what it writes and that its verdicts follow the data."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import quota_bench as Q  # noqa: E402

from gpufleet.sim import traces as T  # noqa: E402

pytestmark = pytest.mark.skipif(not os.path.isdir(T.SHARED_TRACES), reason="../shared/traces not present")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("quota")
    assert Q.main(["--services", "3", "--hours", "1", "--seeds", "0", "--out", str(out)]) == 0
    assert (out / "README.md").exists() and (out / "quota.png").stat().st_size > 0
    res: dict[str, Any] = json.loads((out / "results.json").read_text())
    res["_readme"] = (out / "README.md").read_text()
    return res


def test_the_arbitrated_fleet_stays_within_the_quota(tiny: dict[str, Any]) -> None:
    q = tiny["quota"]
    assert q["gpus"] == max(3, int(0.7 * q["combined_peak_gpus"]))  # 70 % of gpufleet-alone's peak
    assert tiny["runs"]["gpufleet-alone"]["peak_gpus"] == q["combined_peak_gpus"]
    assert tiny["runs"]["gpufleet-quota"]["peak_gpus"] <= q["gpus"]
    assert tiny["runs"]["gpufleet-quota"]["minutes_over_quota"] == 0
    for name, run in tiny["runs"].items():
        if name.startswith("hpa-static"):  # maxReplicas are shares of the quota, one split per run
            assert run["peak_gpus"] <= sum(q["static_shares"][name].values()) <= q["gpus"]
    assert [s["tier"] for s in tiny["services"]] == ["premium", "standard", "free"]


def test_verdicts_are_computed_from_the_runs(tiny: dict[str, Any]) -> None:
    v = Q.verdicts(tiny["runs"])
    assert v == json.loads(json.dumps(tiny["verdicts"]))
    runs = json.loads(json.dumps(tiny["runs"]))
    runs["gpufleet-quota"]["tiers"]["premium"]["attainment"] = 0.9995
    assert Q.verdicts(runs)["met"] is True
    runs["gpufleet-quota"]["tiers"]["premium"]["attainment"] = 0.99
    assert Q.verdicts(runs)["met"] is False
    top = 100 * tiny["verdicts"]["top_tier_attainment"]
    assert f"gpufleet-quota {top:.3f} %" in tiny["_readme"]


def test_docs_figures_are_the_reports() -> None:
    """docs/quotas.md shows what reports/quota/results.json holds (`make bench-quota` writes both)."""
    res = json.loads((ROOT / "reports/quota/results.json").read_text())
    assert Q.docs_block(res) in (ROOT / "docs/quotas.md").read_text()
    assert res["runs"]["gpufleet-quota"]["minutes_over_quota"] == 0


def test_the_premium_setting_is_chosen_on_the_tuning_day_and_used_in_every_run(tiny: dict[str, Any]) -> None:
    st = tiny["premium_setting"]
    assert st["tune_day"] == Q.TUNE_DAY_INDEX + 1 != Q.DAY_INDEX + 1  # never the evaluation day
    assert Q.choose([{"service": s, "u": r["u"], "pool": r["pool"], "arrived": 1.0, "met": r["services"][s],
                      "gpu_hours": 0.0} for r in st["table"] for s in r["services"]])["u"] == st["u"]
    assert tiny["knobs"]["tier_u"] == {Q.TOP: st["u"]}
    assert [d["u"] for d in tiny["diagnosis"]["before"]] == [Q.KNOBS["gpufleet"]["u"]]
    assert [d["u"] for d in tiny["diagnosis"]["after"]] == [st["u"]]
    # The report's notes are the diagnosis' numbers.
    b = tiny["diagnosis"]["before"][0]
    assert f"missed {b['missed']:.0f} of {b['arrived']:.0f} requests" in tiny["_readme"]
    assert f"Chosen: u = {st['u']:g}" in tiny["_readme"]


def _row(u: float, pool: int, met: float) -> dict[str, Any]:
    return {"service": "a", "u": u, "pool": pool, "arrived": 1000.0, "met": met, "gpu_hours": 10 / u}


def test_choose_takes_the_highest_u_that_met_the_goal_without_a_pool() -> None:
    runs = [_row(0.6, 0, 990.0), _row(0.4, 0, 999.5), _row(0.3, 0, 999.9), _row(0.6, 2, 1000.0)]
    got = Q.choose(runs)
    assert (got["u"], got["met_on_tuning_day"]) == (0.4, True)  # the pool row met it too, but is not a u
    none = Q.choose([_row(0.6, 0, 990.0), _row(0.3, 0, 998.0)])
    assert (none["u"], none["met_on_tuning_day"]) == (0.3, False)  # the lowest u, and it says so


def test_the_tier_setting_is_never_looser_than_a_run_and_makes_room() -> None:
    assert Q.hpa_u(0.3, {Q.TOP: 0.25}, Q.TOP) == 0.25
    assert Q.hpa_u(0.3, {Q.TOP: 0.4}, Q.TOP) == 0.3
    assert Q.hpa_u(0.6, {Q.TOP: 0.25}, "standard") == 0.6
    svc = Q.service(Q.busiest(3, 1.0)[0], 0, 1.0, 0)
    spec = svc.scenario.spec
    low = Q.at_u(svc, spec, 0.1)
    assert low.scaling.target_utilization == 0.1
    peak = float(svc.scenario.trace.rate_per_window(60).max())
    assert low.replicas.max >= 3 * peak / (svc.scenario.rps_per_replica * 0.1) > spec.replicas.max
