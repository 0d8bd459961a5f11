"""The frontier benchmark's quick variant (`make bench-quick`), run here: the structure of what
it writes, that it resumes instead of running twice, and that its verdicts follow the stored
results (change a result and the verdict changes)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import frontier as F  # noqa: E402
import frontier_render as R  # noqa: E402
import frontier_stats as S  # noqa: E402

from gpufleet.sim import traces as T  # noqa: E402

pytestmark = pytest.mark.skipif(not os.path.isdir(T.SHARED_TRACES), reason="../shared/traces not present")
STATUSES = {"met", "not_met", "undetermined"}


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench-quick")
    assert F.main(["--grid", "quick", "--out", str(out), "--workers", str(min(2, os.cpu_count() or 1)),
                   "--no-progress"]) == 0
    return out


def load(out: Path) -> dict[str, Any]:
    with open(out / "results.json") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


def test_quick_results_have_every_frontier_interval_and_verdict(quick: Path) -> None:
    res = load(quick)
    grid = F.GRIDS["quick"]
    assert res["grid"]["name"] == "quick" and res["schema"] == F.SCHEMA
    assert res["timing"]["runs_done"] == res["timing"]["runs"] > 0
    assert {x["trace"] for x in res["split"]["tune"]} == set(grid.tune_traces)
    assert {x["trace"] for x in res["split"]["eval"]} == set(grid.eval_traces)
    assert not set(grid.tune_traces) & set(grid.eval_traces)
    for cold in grid.colds:
        for policy in grid.policies:
            t = res["tuning"][cold][policy]
            assert set(t["chosen"]) == set(grid.secondary.get(policy, {}))
            assert t["default_u"]["u"] in grid.u_tune
        for trace in grid.eval_traces:
            frs = res["frontiers"][cold][trace]
            assert set(frs) == set(grid.policies)
            for fr in frs.values():
                assert [p["u"] for p in fr["points"]] == list(grid.u)
                for p in fr["points"]:
                    assert p["seeds"] == list(grid.seeds)
                    for q in ("attainment", "gpu_hours"):
                        ti = p[q]
                        assert ti["n"] == len(grid.seeds) and ti["lo"] <= ti["mean"] <= ti["hi"]
                assert set(fr["at_goal"]["per_seed"]) == {str(s) for s in grid.seeds}
            v = res["verdicts"][cold][trace]
            assert v["vs_baseline"]["status"] in STATUSES and v["vs_lower_bound"]["status"] in STATUSES
            assert v["ratio_goal"] == S.RATIO_GOALS[cold]
            assert os.path.exists(quick / f"frontier-{R._slug(cold)}-{R._slug(trace)}.png")
        assert res["summary"][cold]["vs_baseline"] in STATUSES
    for trace in grid.eval_traces:
        lb = res["lower_bounds"][trace]
        assert set(lb["per_seed"]) == {str(s) for s in grid.seeds} and lb["gpu_hours"]["mean"] > 0
        assert res["clairvoyant"][trace]["gpu_hours"]["n"] == len(grid.seeds)
    # every run is within the cost: a 14-day run in <= 60 s, per policy
    assert set(res["timing"]["per_policy"]) >= set(grid.policies)
    readme = (quick / "README.md").read_text()
    assert readme == R.render_report(res)
    assert "## Verdict" in readme and "## Tuning and evaluation apart" in readme


def test_a_second_call_resumes_and_runs_nothing(quick: Path) -> None:
    lines = (quick / "runs.jsonl").read_text().splitlines()
    sessions = (quick / "sessions.jsonl").read_text().splitlines()
    assert F.main(["--grid", "quick", "--out", str(quick), "--workers", "1", "--no-progress"]) == 0
    assert (quick / "runs.jsonl").read_text().splitlines() == lines
    assert (quick / "sessions.jsonl").read_text().splitlines() == sessions  # no new session: nothing ran
    assert len({json.loads(x)["key"] for x in lines}) == len(lines) == load(quick)["timing"]["runs"]


def test_the_verdict_follows_the_stored_results(quick: Path, tmp_path: Path) -> None:
    """Rewrite the stored eval results of one trace and cold setting and aggregate again: the
    verdict is what the numbers say, nothing else."""
    grid = F.GRIDS["quick"]
    store = F.Store(str(quick / "runs.jsonl"))
    cold, trace = "typical", grid.eval_traces[0]
    lo_u, hi_u = min(grid.u), max(grid.u)

    def verdict_with(gpufleet_cost: float, gpufleet_reaches: bool = True) -> dict[str, Any]:
        path = tmp_path / f"runs-{gpufleet_cost}-{gpufleet_reaches}.jsonl"
        with open(path, "w") as fh:
            for row in store.rows.values():
                p = row["params"]
                row = json.loads(json.dumps(row))
                if p["phase"] == "eval" and p["cold"] == cold and p["trace"] == trace and p["policy"] in grid.policies:
                    u, seed = p["knobs"]["u"], p["seed"]
                    # every policy: 99.99 % at the lowest target down to 99.8 % at the highest,
                    # GPU-hours falling with the target; gpufleet at `gpufleet_cost` x the baselines'
                    w = (u - lo_u) / (hi_u - lo_u)
                    cost = gpufleet_cost if p["policy"] == S.GPUFLEET else 1.0
                    att = 1 - 10 ** (-4 + 1.3 * w)
                    if p["policy"] == S.GPUFLEET and not gpufleet_reaches:
                        att = 0.99
                    row["result"].update(gpu_hours=100.0 * cost / u * (1 + 0.01 * seed), attainment=att)
                fh.write(json.dumps(row) + "\n")
        res = F.aggregate(grid, F.Store(str(path)), sessions=[], command="test")
        v: dict[str, Any] = res["verdicts"][cold][trace]
        return v

    cheap, dear = verdict_with(0.7), verdict_with(0.9)
    assert cheap["vs_baseline"]["ratio"]["mean"] == pytest.approx(0.7, rel=1e-6)
    assert cheap["vs_baseline"]["status"] == "met"  # 0.7 <= 0.8
    assert dear["vs_baseline"]["ratio"]["mean"] == pytest.approx(0.9, rel=1e-6)
    assert dear["vs_baseline"]["status"] == "not_met" and dear["vs_baseline"]["reasons"] == ["ratio_above_goal"]
    short = verdict_with(0.7, gpufleet_reaches=False)
    assert short["vs_baseline"]["status"] == "not_met"
    assert short["vs_baseline"]["reasons"] == ["gpufleet_below_goal"]
    # and what the README renders follows
    assert "**met**" in R.verdict_cell(cheap["vs_baseline"], cheap["ratio_goal"])
    assert "**not met**" in R.verdict_cell(dear["vs_baseline"], dear["ratio_goal"])
