"""A/B helper for TUNING.md: gpufleet alone on ServeGen m-small (first N days) or the 1x->5x step.

    .venv/bin/python reports/bench/tuning_ab.py servegen 3          # first 3 days of m-small
    .venv/bin/python reports/bench/tuning_ab.py servegen 14
    .venv/bin/python reports/bench/tuning_ab.py servegen 14 8       # with a fixed warmPool.size 8
    .venv/bin/python reports/bench/tuning_ab.py servegen 14 auto m-mid
    .venv/bin/python reports/bench/tuning_ab.py step                # auto pool
    .venv/bin/python reports/bench/tuning_ab.py step 8              # fixed warmPool.size 8
    .venv/bin/python reports/bench/tuning_ab.py step 8 5            # ... and scaling.intervalSeconds 5
    .venv/bin/python reports/bench/tuning_ab.py step-phases 8       # step at 1800 + 0..14 s (scrape phase)
    GPUFLEET_ROOT=/path/to/other/checkout .venv/bin/python reports/bench/tuning_ab.py servegen 3
    SCRAPE_S=5 .venv/bin/python reports/bench/tuning_ab.py step 8 5 # what-if: a 5 s Prometheus scrape

Same scenario construction as benchmarks/sim_bench.py (make_scenario, seed 0, ServeGen at 0.1x,
step 20 req/s x5 at 30 min with a fixed 90 s cold start); GPUFLEET_ROOT runs another checkout's
policy (e.g. a `git worktree` of the previous commit) on the same simulator code path.
SCRAPE_S changes the simulator's scrape interval (what every policy sees): a what-if for the
report, never a benchmark setting. "pool GPU-h" is the replica-hours not serving (standbys and
replicas still starting), from the per-minute series. Run from the repository root.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

sys.path.insert(0, os.path.join(os.environ.get("GPUFLEET_ROOT", "."), "operator"))

from gpufleet.sim import traces as T  # noqa: E402
from gpufleet.sim.engine import SimResult  # noqa: E402
from gpufleet.sim.model import ColdStart  # noqa: E402
from gpufleet.sim.scenarios import Scenario, make_scenario  # noqa: E402

STEP_AT = 1800
# What every policy sees: the Prometheus scrape interval (SCRAPE_S=5 for the what-if).
SCRAPE_S = int(os.environ.get("SCRAPE_S", "15"))


def pool_arg(i: int) -> int | str:
    return int(sys.argv[i]) if len(sys.argv) > i and sys.argv[i] != "auto" else "auto"


def step_scenario(pool: int | str, phase: int = 0, interval: int | None = None) -> Scenario:
    at = STEP_AT + phase
    tr = T.step_load(20.0, 5.0, at, 2 * STEP_AT - at, seed=0)
    sc = make_scenario("step-1x-5x-cold90s", tr, seed=0, cold=ColdStart(fixed_s=90.0), step_at_s=at, warm_pool=pool)
    sc.cfg = dataclasses.replace(sc.cfg, scrape_s=SCRAPE_S)
    if interval is not None:
        sc.spec = sc.spec.model_copy(
            update={"scaling": sc.spec.scaling.model_copy(update={"interval_seconds": interval})})
    return sc


def pool_gpu_hours(r: SimResult, record_s: int = 60) -> float:
    return float((r.total - r.serving).clip(min=0).sum()) * record_s / 3600.0


def main() -> None:
    which = sys.argv[1]
    if which == "step-phases":
        pool = pool_arg(2)
        out = [step_scenario(pool, k).run("gpufleet").violation_after_step_s or 0 for k in range(15)]
        print(f"step at {STEP_AT}+0..14 s, pool {pool}: s in violation after step {out}, "
              f"mean {sum(out) / len(out):.1f}, min {min(out)}, max {max(out)}")
        return
    if which == "step":
        interval = int(sys.argv[3]) if len(sys.argv) > 3 else None
        sc = step_scenario(pool_arg(2), interval=interval)
    else:
        days = float(sys.argv[2]) if len(sys.argv) > 2 else 14.0
        model = sys.argv[4] if len(sys.argv) > 4 else "m-small"
        tr = T.load_servegen_clients(T.servegen_folder(model), scale=0.1, seed=0)
        tr = T.window(tr, 0, int(days * 86400))
        sc = make_scenario(f"servegen-{model}-{days:g}d", tr, seed=0, warm_pool=pool_arg(3))
        sc.cfg = dataclasses.replace(sc.cfg, scrape_s=SCRAPE_S)
    t0 = time.time()
    r = sc.run("gpufleet")
    print(f"{sc.name}: attainment {r.attainment * 100:.3f} %, GPU-h {r.gpu_hours:.1f}, "
          f"s in violation {r.violation_s} (after step {r.violation_after_step_s}), dropped {r.dropped:.0f}, "
          f"mean replicas {r.total.mean():.2f} (serving {r.serving.mean():.2f}), "
          f"pool GPU-h {pool_gpu_hours(r):.1f}, wall {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
