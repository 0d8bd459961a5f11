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
        if name.startswith("hpa-static"):  # maxReplicas are shares of the quota
            assert run["peak_gpus"] <= sum(q["static_shares"].values()) <= q["gpus"]
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
