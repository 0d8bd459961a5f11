"""A/B helper for TUNING.md: gpufleet alone on ServeGen m-small (first N days) or the 1x->5x step.

    .venv/bin/python reports/bench/tuning_ab.py servegen 3          # first 3 days of m-small
    .venv/bin/python reports/bench/tuning_ab.py servegen 14
    .venv/bin/python reports/bench/tuning_ab.py step                # auto pool
    .venv/bin/python reports/bench/tuning_ab.py step 4              # fixed warmPool.size 4
    GPUFLEET_ROOT=/path/to/other/checkout .venv/bin/python reports/bench/tuning_ab.py servegen 3

Same scenario construction as benchmarks/sim_bench.py (make_scenario, seed 0, ServeGen at 0.1x,
step 20 req/s x5 at 30 min with a fixed 90 s cold start); GPUFLEET_ROOT runs another checkout's
policy (e.g. a `git worktree` of the previous commit) on the same simulator code path.
Run from the repository root.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.join(os.environ.get("GPUFLEET_ROOT", "."), "operator"))

from gpufleet.sim import traces as T  # noqa: E402
from gpufleet.sim.fleet import ColdStart  # noqa: E402
from gpufleet.sim.scenarios import make_scenario  # noqa: E402


def main() -> None:
    which = sys.argv[1]
    if which == "step":
        pool: int | str = int(sys.argv[2]) if len(sys.argv) > 2 else "auto"
        tr = T.step_load(20.0, 5.0, 1800, 1800, seed=0)
        sc = make_scenario("step-1x-5x-cold90s", tr, seed=0, cold=ColdStart(fixed_s=90.0), step_at_s=1800,
                           warm_pool=pool)
    else:
        days = float(sys.argv[2]) if len(sys.argv) > 2 else 14.0
        tr = T.load_servegen_clients(T.servegen_folder("m-small"), scale=0.1, seed=0)
        tr = T.window(tr, 0, int(days * 86400))
        sc = make_scenario(f"servegen-m-small-{days:g}d", tr, seed=0)
    t0 = time.time()
    r = sc.run("gpufleet")
    print(f"{sc.name}: attainment {r.attainment * 100:.3f} %, GPU-h {r.gpu_hours:.1f}, "
          f"s in violation {r.violation_s} (after step {r.violation_after_step_s}), dropped {r.dropped:.0f}, "
          f"mean replicas {r.total.mean():.2f} (serving {r.serving.mean():.2f}), wall {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
