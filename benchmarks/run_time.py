"""Issue 16 item 7 as it reads: one 14-day run within 60 s, per policy, knob value and seed.

The frontier grid's own figure (reports/bench/README.md, "Run time") is seconds per simulated day
over its runs, every worker busy, extrapolated to 14 days. This measures the thing itself: every
policy at every knob value of the full grid (its secondary knob's candidates x the utilisation
targets), at the cold-start setting of its slowest ServeGen m-mid run in the grid (runs.jsonl), one
run each over all 14 days of ServeGen m-mid (the larger tuning model), seed 1, each in a fresh
process (nothing shared with an earlier run: the forecaster's fits and the latency tables are
computed from scratch), at most one run per two cores at a time. Writes run_time.json beside the
grid's results.

    python benchmarks/run_time.py --out reports/bench
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # frontier, beside this file, when imported

from frontier import CLAIRVOYANT, GRIDS, LOWER_BOUND, NONE, candidates, execute, git_rev, run_params  # noqa: E402

TRACE = "m-mid/d1-14"
SEED = 1
LIMIT_S = 60.0  # the bound on one 14-day run


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def planned_runs(runs_path: Path) -> list[dict[str, Any]]:
    """Every policy at every knob value of the full grid, at the cold setting of its slowest m-mid
    run there (seconds per simulated day)."""
    slowest: dict[str, tuple[float, str]] = {}
    for line in runs_path.read_text().splitlines():
        row = json.loads(line)
        res, params = row["result"], row["params"]
        if params["trace"].startswith("m-mid/") and res.get("sim_days", 0) >= 1:
            per_day = res["sim_wall_s"] / res["sim_days"]
            if per_day > slowest.get(params["policy"], (-1.0, ""))[0]:
                slowest[params["policy"]] = (per_day, params["cold"])
    grid = GRIDS["full"]
    out = [{"policy": p, "cold": NONE, "knobs": {}} for p in (CLAIRVOYANT, LOWER_BOUND)]
    for policy in grid.policies:
        cold = slowest.get(policy, (0.0, grid.colds[0]))[1]
        out += [{"policy": policy, "cold": cold, "knobs": {**cand, "u": u}}
                for cand in candidates(grid, policy) for u in grid.u]
    # Longest first (the KPA and gpufleet at their lowest targets): the pool ends sooner.
    order = {"knative-kpa": 0, "gpufleet": 1, CLAIRVOYANT: 2, "keda": 3, "hpa": 4, LOWER_BOUND: 5}
    return sorted(out, key=lambda r: (order.get(r["policy"], 9), r["knobs"].get("u", 1.0)))


def run_one(params: dict[str, Any]) -> dict[str, Any]:
    """One 14-day run in this (fresh) process: wall seconds of the whole run (trace, scenario and
    simulation; the 60 s bound is on this), the simulation's alone, and CPU seconds."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    run = run_params("timing", params["cold"], TRACE, params["policy"], params["knobs"], SEED)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    row = execute(run)
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    res = row["result"]
    return {"policy": params["policy"], "knobs": params["knobs"], "cold": params["cold"], "trace": TRACE, "seed": SEED,
            "sim_days": res["sim_days"],
            "sim_wall_s": round(res["sim_wall_s"], 1), "wall_s": round(wall, 1),
            "cpu_s": round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 1),
            "within_limit": wall <= LIMIT_S, "attainment": res.get("attainment"),
            "gpu_hours": res.get("gpu_hours")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="reports/bench", help="the grid's report folder (runs.jsonl in, run_time.json out)")
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    ap.add_argument("--policy", action="append", help="only these policies (repeatable); the others' rows of an "
                    "earlier run_time.json are kept")
    args = ap.parse_args(argv)
    out = Path(args.out)
    chosen = [r for r in planned_runs(out / "runs.jsonl") if not args.policy or r["policy"] in args.policy]
    path = out / "run_time.json"
    kept = [r for r in (json.loads(path.read_text())["runs"] if path.exists() and args.policy else [])
            if r["policy"] not in args.policy]
    started = time.time()
    # One fresh process per run (max_tasks_per_child): a worker's memo of fits would make a later
    # run faster than a run alone is.
    with ProcessPoolExecutor(max_workers=min(args.workers, len(chosen)), max_tasks_per_child=1) as pool:
        rows = kept + list(pool.map(run_one, chosen))
    for r in rows:
        print(f"{r['policy']:<16} {json.dumps(r['knobs']):<42} {r['cold']:<8} {r['sim_days']:.0f} days: "
              f"{r['wall_s']:6.1f} s ({r['cpu_s']:.1f} s CPU)  {'ok' if r['within_limit'] else 'OVER'} 60 s")
    worst = {p: max(r["wall_s"] for r in rows if r["policy"] == p) for p in dict.fromkeys(r["policy"] for r in rows)}
    report = {"command": "python benchmarks/run_time.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "started": started, "rev": git_rev(), "wall_s": round(time.time() - started, 1), "workers": min(args.workers, len(chosen)),
              "cores": os.cpu_count(), "machine": cpu_model(),
              "python": platform.python_version(), "limit_s": LIMIT_S, "worst_s": worst, "runs": rows,
              "all_within_limit": all(r["within_limit"] for r in rows)}
    (out / "run_time.json").write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
