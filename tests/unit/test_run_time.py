"""benchmarks/run_time.py plans one 14-day run per policy and knob value of the full grid, at the
cold setting of each policy's slowest ServeGen m-mid run in the grid's store (issue 16, item 7)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from gpufleet.sim.scenarios import BENCH_TRACES, DAY

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import frontier as F  # noqa: E402
import run_time  # noqa: E402


def row(policy: str, cold: str, trace: str, wall_s: float, days: float) -> str:
    return json.dumps({"params": {"policy": policy, "cold": cold, "trace": trace, "knobs": {}, "seed": 0},
                       "result": {"sim_wall_s": wall_s, "sim_days": days}})


def test_every_knob_value_at_the_slowest_m_mid_cold_setting(tmp_path: Path) -> None:
    runs = tmp_path / "runs.jsonl"
    runs.write_text("\n".join([
        row("knative-kpa", "typical", "m-mid/d8-10", 9.0, 3.0),   # 3 s a day
        row("knative-kpa", "warm", "m-mid/d8-10", 24.0, 3.0),     # 8 s a day: the slowest on m-mid
        row("knative-kpa", "large", "deepseek-r1-x5", 20.0, 1.0),  # slower, but not m-mid
        row("knative-kpa", "large", "m-mid/d8-10", 5.0, 0.04),    # under a day: set-up, not counted
        row("gpufleet", "large", "m-mid/d11-14", 20.0, 4.0),
    ]) + "\n")
    plan = run_time.planned_runs(runs)
    grid = F.GRIDS["full"]
    kpa = [r for r in plan if r["policy"] == "knative-kpa"]
    assert {r["cold"] for r in kpa} == {"warm"}
    assert len(kpa) == len(F.candidates(grid, "knative-kpa")) * len(grid.u) == 18
    assert {r["cold"] for r in plan if r["policy"] == "gpufleet"} == {"large"}
    # A policy with no m-mid run in the store: the grid's first cold setting.
    assert {r["cold"] for r in plan if r["policy"] == "hpa"} == {grid.colds[0]}
    assert [r for r in plan if r["policy"] in (F.CLAIRVOYANT, F.LOWER_BOUND)] == [
        {"policy": F.CLAIRVOYANT, "cold": F.NONE, "knobs": {}}, {"policy": F.LOWER_BOUND, "cold": F.NONE, "knobs": {}}]
    assert len(plan) == 2 + sum(len(F.candidates(grid, p)) * len(grid.u) for p in grid.policies)
    # What it runs: all fourteen days, a trace no frontier judges.
    timing = BENCH_TRACES[run_time.TRACE]
    assert timing.length_s == 14 * DAY and timing.start_s == 0 and timing.split == "timing"


def test_the_readme_quotes_the_committed_run_time_report() -> None:
    """The README's run-time sentence is copied from reports/bench/run_time.json: the revision,
    and per policy how many rows are within 60 s and the range of their times."""
    root = Path(__file__).resolve().parents[2]
    report = json.loads((root / "reports/bench/run_time.json").read_text())
    readme = " ".join((root / "README.md").read_text().split())  # one line: the sentence wraps
    assert f"(at {report['rev']})" in readme
    for policy in ("hpa", "keda", "gpufleet", "knative-kpa"):
        rows = [r for r in report["runs"] if r["policy"] == policy]
        ok = sum(r["within_limit"] for r in rows)
        times = sorted(r["wall_s"] for r in rows)
        quoted = (f"{policy} {ok} of {len(rows)} (slowest {times[-1]} s)" if policy in ("hpa", "keda")
                  else f"{policy} {ok} of {len(rows)} ({times[0]}-{times[-1]} s")
        assert quoted in readme, quoted
