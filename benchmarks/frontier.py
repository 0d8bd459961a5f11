"""Frontier benchmark: every policy's attainment-vs-GPU-hours curve from its own knob, over seeds,
cold-start settings and traces, tuned on days 1-10 and judged on what tuning never saw.

    python benchmarks/frontier.py --grid quick                 # CI variant (< 5 min on 2 cores)
    python benchmarks/frontier.py --grid reduced --workers 16  # 16 cores, well under 10 min
    python benchmarks/frontier.py --grid full                  # everything (hours on 2 cores)
    python benchmarks/frontier.py --grid full --plan           # run count and estimated cost only
    python benchmarks/frontier.py --report-only --out reports/bench   # re-render from stored runs
    python benchmarks/frontier.py --grid reduced --cold typical --traces m-mid/d11-14 --policies hpa,gpufleet \\
        --seeds 0 --out /tmp/slice                             # a slice of a grid

Each run (phase, cold setting, trace, policy, knobs, seed) is one process task
(ProcessPoolExecutor, workers = CPU count); its result is appended to OUT/runs.jsonl as one JSON
line keyed by those parameters the moment it finishes, so an interrupted suite resumes where it
stopped (`--fresh` starts over). Phases:
1. tune: every policy on the tuning split (days 1-10 of ServeGen m-small and m-mid), its
   secondary knob's candidates (gpufleet's warm pool, Knative's scale-down-delay) crossed with
   the tuning values of its utilisation target;
2. choices, from the tuning runs only (frontier_stats.choose_secondary / default_u);
3. eval: every policy with its chosen secondary knob, swept over the utilisation targets, on the
   evaluation traces; plus the lower bound (sim/lowerbound.py) and the clairvoyant-5s policy.
Eval runs that do not depend on a choice start at once, beside the tuning runs.

Writes OUT/results.json (all figures and verdicts, as data), OUT/README.md and OUT/frontier-*.png
(rendered from results.json by frontier_render.py), and with --readme the numbers block of the
repository's README.md. Run from the repository root.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "operator"))

import frontier_stats as S  # noqa: E402

CLAIRVOYANT = "clairvoyant-5s"
LOWER_BOUND = "lower-bound"
NONE = "none"  # the cold setting of runs that start nothing cold (lower bound, clairvoyant)
SCHEMA = 1

# Seconds of simulation per simulated day, by policy: the mean over the full grid's runs at c7cfdc0
# (reports/bench, timing.per_policy) on 16 cores with 16 workers busy: the plan's estimate and the
# longest-first order.
S_PER_DAY = {"hpa": 1.4, "keda": 1.6, "knative-kpa": 3.2, "gpufleet": 4.3, CLAIRVOYANT: 3.8, LOWER_BOUND: 0.2,
             "static-peak": 0.5}


@dataclasses.dataclass(frozen=True)
class Grid:
    """What a suite runs. `secondary[policy][knob]` lists the candidates chosen between on the
    tuning split; `u_tune` (a subset of `u`) are the utilisation targets tried there."""

    name: str
    colds: tuple[str, ...]
    tune_traces: tuple[str, ...]
    eval_traces: tuple[str, ...]
    u: tuple[float, ...]
    u_tune: tuple[float, ...]
    seeds: tuple[int, ...]
    tune_seeds: tuple[int, ...]
    policies: tuple[str, ...] = ("hpa", "keda", "knative-kpa", "gpufleet")
    secondary: Mapping[str, Mapping[str, tuple[Any, ...]]] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["secondary"] = {p: {k: list(v) for k, v in ks.items()} for p, ks in self.secondary.items()}
        return d


# Utilisation targets: the HPA range 0.55-0.85, widened to 0.25-1 (the API's ceiling) so
# that frontiers can bracket 99.9 %: with cold starts of minutes and bursty traces, reactive
# policies need far more headroom than 0.55 to get there, and on a trace with a 4 s target
# (Mooncake) they are above it at 0.85 (a frontier that is above it at its cheapest point, or never
# reaches it, gives only a bound at the goal).
U6 = (0.25, 0.3, 0.4, 0.6, 0.8, 1.0)
U5 = (0.3, 0.4, 0.6, 0.8, 1.0)  # a subset of U6: the reduced grid's runs are also the full grid's
GRIDS: dict[str, Grid] = {g.name: g for g in (
    # CI: two cold settings, three afternoon hours to tune on (day 10) and to judge on (day 11),
    # plus the 1-hour Mooncake trace; three targets, two seeds.
    Grid("quick", colds=("warm", "typical"), tune_traces=("m-small/d10-13h+3h",),
         eval_traces=("m-small/d11-13h+3h", "mooncake-x4"), u=(0.3, 0.6, 1.0), u_tune=(0.3, 0.6, 1.0),
         seeds=(0, 1), tune_seeds=(0,),
         secondary={"gpufleet": {"pool": (0, "auto")}, "knative-kpa": {"scale_down_delay_s": (0,)}}),
    # A 16-core machine in well under 10 minutes: warm nodes (~1 min, where 99.9 % is within
    # reach) and the typical ~5 min cold start, three held-out traces (the last four days of m-mid,
    # ServeGen reasoning, Mooncake), five targets, five seeds; tuned on the last three tuning days
    # of both ServeGen traces with two seeds.
    Grid("reduced", colds=("warm", "typical"), tune_traces=("m-small/d8-10", "m-mid/d8-10"),
         eval_traces=("m-mid/d11-14", "deepseek-r1-x5", "mooncake-x4"), u=U5, u_tune=(0.4, 0.6, 1.0),
         seeds=(0, 1, 2, 3, 4), tune_seeds=(0, 1),
         secondary={"gpufleet": {"pool": (0, 2, "auto")}, "knative-kpa": {"scale_down_delay_s": (0,)}}),
    # Everything the issue names: three cold settings, five held-out traces, six targets, five
    # seeds, each policy's secondary knob. Tuned on days 8-10 of the tuning split (days 1-10),
    # with days 1-7 as the forecaster's warm-up history, two seeds: tuning on all ten days would
    # triple the suite (to ~23 core-h) for choices the last three days already separate; as it is,
    # it fits a 16-core machine in ~25 minutes.
    Grid("full", colds=("warm", "typical", "large"), tune_traces=("m-small/d8-10", "m-mid/d8-10"),
         eval_traces=("m-small/d11-14", "m-mid/d11-14", "deepseek-r1-x5", "azure-code-x4", "mooncake-x4"),
         u=U6, u_tune=(0.25, 0.4, 0.6, 0.8, 1.0), seeds=(0, 1, 2, 3, 4), tune_seeds=(0, 1),
         secondary={"gpufleet": {"pool": (0, 2, "auto")},
                    "knative-kpa": {"scale_down_delay_s": (0, 60, 300)}}),
)}


# ---------------------------------------------------------------------------------------------
# Runs


def key_of(params: Mapping[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, separators=(",", ":"))


def run_params(phase: str, cold: str, trace: str, policy: str, knobs: Mapping[str, Any], seed: int) -> dict[str, Any]:
    return {"phase": phase, "cold": cold, "trace": trace, "policy": policy, "knobs": dict(knobs), "seed": seed}


def candidates(grid: Grid, policy: str) -> list[dict[str, Any]]:
    """Every combination of the policy's secondary knob values (one empty dict if it has none)."""
    sec = grid.secondary.get(policy, {})
    names = sorted(sec)
    return [dict(zip(names, combo)) for combo in itertools.product(*(sec[n] for n in names))]


def tune_runs(grid: Grid) -> list[dict[str, Any]]:
    out = []
    for cold, trace, policy in itertools.product(grid.colds, grid.tune_traces, grid.policies):
        for cand, u, seed in itertools.product(candidates(grid, policy), grid.u_tune, grid.tune_seeds):
            out.append(run_params("tune", cold, trace, policy, {**cand, "u": u}, seed))
    return out


def eval_runs(grid: Grid, chosen: Mapping[str, Mapping[str, Mapping[str, Any]]] | None) -> tuple[list[dict[str, Any]], bool]:
    """The eval runs; without `chosen` (cold -> policy -> knobs) only those that need no choice.
    Returns (runs, complete)."""
    out = []
    complete = True
    for trace, seed in itertools.product(grid.eval_traces, grid.seeds):
        out.append(run_params("eval", NONE, trace, LOWER_BOUND, {}, seed))
        out.append(run_params("eval", NONE, trace, CLAIRVOYANT, {}, seed))
    for cold, trace, policy in itertools.product(grid.colds, grid.eval_traces, grid.policies):
        cands = candidates(grid, policy)
        if len(cands) == 1:
            fixed: Mapping[str, Any] | None = cands[0]
        elif chosen is not None:
            fixed = chosen[cold][policy]
        else:
            complete = False
            continue
        for u, seed in itertools.product(grid.u, grid.seeds):
            out.append(run_params("eval", cold, trace, policy, {**fixed, "u": u}, seed))
    return out, complete


def est_cost(params: Mapping[str, Any]) -> float:
    from gpufleet.sim.scenarios import BENCH_TRACES

    return S_PER_DAY.get(params["policy"], 5.0) * BENCH_TRACES[params["trace"]].days


_SCENARIOS: dict[tuple[str, int, str], Any] = {}


def _scenario(trace: str, seed: int, cold: str) -> Any:
    from gpufleet.sim.scenarios import bench_scenario

    key = (trace, seed, cold)
    if key not in _SCENARIOS:
        if len(_SCENARIOS) >= 4:
            _SCENARIOS.pop(next(iter(_SCENARIOS)))
        _SCENARIOS[key] = bench_scenario(trace, seed, None if cold == NONE else cold)
    return _SCENARIOS[key]


def execute(params: Mapping[str, Any]) -> dict[str, Any]:
    """One run (in a worker process): its stored line."""
    t0 = time.perf_counter()
    sc = _scenario(params["trace"], int(params["seed"]), params["cold"])
    policy = params["policy"]
    if policy == LOWER_BOUND:
        lb = sc.lower_bound()
        result: dict[str, Any] = {"gpu_hours": lb.gpu_hours, "peak": lb.peak, "mean_replicas": lb.mean,
                                  "capped_s": lb.capped_s, "sim_wall_s": time.perf_counter() - t0}
    else:
        res = sc.run(policy, knobs=params["knobs"] or None)
        result = {k: getattr(res, k) for k in (
            "attainment", "gpu_hours", "cost", "arrived", "dropped", "violation_s", "scale_events", "ttft_p95_ms")}
        result["sim_wall_s"] = res.wall_s
        # Replica-hours serving (sampled each recorded interval): the rest of the GPU-hours went
        # to standbys, starting and draining pods and nodes waiting for consolidation.
        result["serving_gpu_hours"] = float(res.serving.sum()) * sc.cfg.record_every_s / 3600.0 \
            * sc.spec.capacity.gpus_per_replica
    result["sim_days"] = sc.trace.seconds / 86400
    result = {k: (float(v) if isinstance(v, (int, float)) else v) for k, v in result.items()}
    return {"key": key_of(params), "params": dict(params), "result": result,
            "wall_s": time.perf_counter() - t0, "pid": os.getpid(), "finished_at": time.time()}


def _worker_init() -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"


class Store:
    """OUT/runs.jsonl: one line per finished run, keyed by its parameters (last line wins)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.rows: dict[str, dict[str, Any]] = {}
        if os.path.exists(path):
            with open(path) as fh:
                for line in fh:
                    line = line.strip()
                    if line:
                        try:
                            row = json.loads(line)
                        except json.JSONDecodeError:
                            continue  # a line cut short by an interruption
                        self.rows[row["key"]] = row

    def add(self, row: dict[str, Any]) -> None:
        self.rows[row["key"]] = row
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row, separators=(",", ":")) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def __contains__(self, key: str) -> bool:
        return key in self.rows

    def select(self, **match: Any) -> list[dict[str, Any]]:
        return [r for r in self.rows.values() if all(r["params"].get(k) == v for k, v in match.items())]


def git_rev() -> str:
    if rev := os.environ.get("GPUFLEET_REV"):  # a copy of the tree without a usable .git (a lent machine)
        return rev
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# ---------------------------------------------------------------------------------------------
# Choices and aggregation (pure functions of the stored runs)


def _rows(store: Store, phase: str, cold: str, trace: str, policy: str, fixed: Mapping[str, Any],
          us: Iterable[float], seeds: Iterable[int]) -> list[dict[str, Any]]:
    """The results of one frontier: these knobs fixed, over `us` and `seeds` (those stored)."""
    out = []
    for u, seed in itertools.product(us, seeds):
        key = key_of(run_params(phase, cold, trace, policy, {**fixed, "u": u}, seed))
        row = store.rows.get(key)
        if row is not None:
            out.append({"u": u, "seed": seed, **row["result"]})
    return out


def choices(grid: Grid, store: Store) -> dict[str, Any]:
    """cold -> policy -> {"chosen": knobs, "secondary": scores, "default_u": ...}: from tuning runs only."""
    out: dict[str, Any] = {}
    for cold in grid.colds:
        out[cold] = {}
        for policy in grid.policies:
            cands = candidates(grid, policy)
            fronts = {key_of(c): {t: S.frontier_summary(_rows(store, "tune", cold, t, policy, c, grid.u_tune,
                                                               grid.tune_seeds))
                                  for t in grid.tune_traces} for c in cands}
            sec = S.choose_secondary(fronts) if len(cands) > 1 else {"chosen": key_of(cands[0]), "scores": {}}
            chosen = json.loads(sec["chosen"])
            out[cold][policy] = {"chosen": chosen, "secondary": sec,
                                 "default_u": S.default_u(fronts[sec["chosen"]]),
                                 "frontiers": fronts[sec["chosen"]]}
    return out


def tuning_complete(grid: Grid, store: Store) -> bool:
    return all(key_of(p) in store for p in tune_runs(grid))


def _per_seed(rows: Sequence[Mapping[str, Any]], field: str) -> dict[str, float]:
    return {str(r["seed"]): float(r[field]) for r in rows}


def aggregate(grid: Grid, store: Store, *, sessions: Sequence[Mapping[str, Any]], command: str) -> dict[str, Any]:
    from gpufleet.sim.scenarios import BENCH_TRACES, describe_cold

    chosen = choices(grid, store)
    res: dict[str, Any] = {
        "schema": SCHEMA, "command": command, "rev": git_rev(), "grid": grid.as_dict(),
        "goal": {"attainment": S.GOAL, "ratio_vs_best_baseline": {c: S.RATIO_GOALS[c] for c in grid.colds},
                 "ratio_vs_lower_bound": S.LOWER_BOUND_GOAL},
        "ci": {"method": "Student t-interval over seeds; ratios paired by seed", "level": S.LEVEL},
        "split": {"tune": [{"trace": t, "days": BENCH_TRACES[t].days} for t in grid.tune_traces],
                  "eval": [{"trace": t, "days": BENCH_TRACES[t].days, "held_out": BENCH_TRACES[t].held_out}
                           for t in grid.eval_traces]},
        "cold_settings": {c: describe_cold(c) for c in grid.colds},
        "tuning": chosen,
    }
    lbs: dict[str, Any] = {}
    clair: dict[str, Any] = {}
    for trace in grid.eval_traces:
        rows = [{"seed": s, **r["result"]} for s in grid.seeds
                for r in [store.rows.get(key_of(run_params("eval", NONE, trace, LOWER_BOUND, {}, s)))] if r]
        lbs[trace] = {"per_seed": _per_seed(rows, "gpu_hours"), "gpu_hours": S.t_interval([r["gpu_hours"] for r in rows]),
                      "peak_replicas": max((r["peak"] for r in rows), default=None)}
        rows = [{"seed": s, **r["result"]} for s in grid.seeds
                for r in [store.rows.get(key_of(run_params("eval", NONE, trace, CLAIRVOYANT, {}, s)))] if r]
        clair[trace] = {"per_seed": {str(r["seed"]): {"attainment": r["attainment"], "gpu_hours": r["gpu_hours"]}
                                     for r in rows},
                        "attainment": S.t_interval([r["attainment"] for r in rows], clip=(0.0, 1.0)),
                        "gpu_hours": S.t_interval([r["gpu_hours"] for r in rows])}
    res["lower_bounds"] = lbs
    res["clairvoyant"] = clair
    frontiers: dict[str, Any] = {}
    tuned: dict[str, Any] = {}
    verdicts: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    for cold in grid.colds:
        frontiers[cold], tuned[cold], verdicts[cold] = {}, {}, {}
        for trace in grid.eval_traces:
            fr: dict[str, Any] = {}
            tp: dict[str, Any] = {}
            for policy in grid.policies:
                fixed = chosen[cold][policy]["chosen"]
                rows = _rows(store, "eval", cold, trace, policy, fixed, grid.u, grid.seeds)
                if not rows:
                    continue
                fr[policy] = {"knobs": fixed, **S.frontier_summary(rows)}
                u0 = chosen[cold][policy]["default_u"]["u"]
                at = [r for r in rows if r["u"] == u0]
                if at:
                    tp[policy] = {"u": u0, "knobs": fixed, "attainment": S.t_interval([r["attainment"] for r in at], clip=(0.0, 1.0)),
                                  "gpu_hours": S.t_interval([r["gpu_hours"] for r in at]),
                                  "not_serving_share": S.t_interval([1 - r["serving_gpu_hours"] / r["gpu_hours"] for r in at
                                                                     if "serving_gpu_hours" in r and r["gpu_hours"] > 0]),
                                  "dropped_share": S.t_interval([r["dropped"] / r["arrived"] for r in at if r["arrived"] > 0]),
                                  "reaches_goal": S.t_interval([r["attainment"] for r in at], clip=(0.0, 1.0))["mean"] >= S.GOAL}
            frontiers[cold][trace] = fr
            tuned[cold][trace] = tp
            verdicts[cold][trace] = S.verdict(fr, lbs[trace]["per_seed"], ratio_goal=S.RATIO_GOALS[cold])
        vs = list(verdicts[cold].values())
        summary[cold] = {"ratio_goal": S.RATIO_GOALS[cold], "vs_baseline": S.overall(vs, "vs_baseline"),
                         "vs_lower_bound": S.overall(vs, "vs_lower_bound"),
                         "traces_met": [t for t, v in verdicts[cold].items() if v["vs_baseline"]["status"] == "met"],
                         "traces_not_met": [t for t, v in verdicts[cold].items()
                                            if v["vs_baseline"]["status"] == "not_met"]}
    res["frontiers"] = frontiers
    res["tuned_points"] = tuned
    res["verdicts"] = verdicts
    res["summary"] = summary
    res["timing"] = timing(grid, store, sessions)
    return res


def grid_keys(grid: Grid, store: Store) -> list[str]:
    ch = choices(grid, store) if tuning_complete(grid, store) else None
    chosen = {c: {p: v["chosen"] for p, v in ps.items()} for c, ps in ch.items()} if ch else None
    ev, _ = eval_runs(grid, chosen)
    return [key_of(p) for p in tune_runs(grid) + ev]


def timing(grid: Grid, store: Store, sessions: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    keys = grid_keys(grid, store)
    rows = [store.rows[k] for k in keys if k in store]
    per_policy: dict[str, Any] = {}
    for policy in sorted({r["params"]["policy"] for r in rows}):
        # Runs of a day or more where there are any: a one-hour trace's per-day figure is mostly its
        # set-up, scaled 24x (the quick grid has only hours).
        mine = [r for r in rows if r["params"]["policy"] == policy and r["result"]["sim_days"] > 0]
        rs = [r for r in mine if r["result"]["sim_days"] >= 1] or mine
        per_day = [r["result"]["sim_wall_s"] / r["result"]["sim_days"] for r in rs]
        per_policy[policy] = {"runs": len(rs), "s_per_sim_day_mean": sum(per_day) / len(per_day),
                              "s_per_sim_day_max": max(per_day), "per_14d_max_s": 14 * max(per_day),
                              "within_60s_per_14d": 14 * max(per_day) <= 60.0}
    return {"runs": len(keys), "runs_done": len(rows), "core_s": sum(r["wall_s"] for r in rows),
            "sessions": list(sessions), "wall_s": sum(s["wall_s"] for s in sessions),
            "per_policy": per_policy}


# ---------------------------------------------------------------------------------------------
# The suite


def run_suite(grid: Grid, store: Store, workers: int, *, progress: bool = True,
              stop_after_s: float | None = None) -> int:
    """Runs whatever of the grid is not stored yet; returns how many ran. With `stop_after_s`,
    starts no run after that many seconds and returns once the running ones are stored (a
    machine lent for a limited time; the next call resumes)."""
    deadline = time.time() + stop_after_s if stop_after_s is not None else math.inf
    from tqdm import tqdm

    todo = [p for p in tune_runs(grid) if key_of(p) not in store]
    first, _ = eval_runs(grid, None)
    todo += [p for p in first if key_of(p) not in store]
    # Longest first packs the workers best; tuning runs go before the eval runs that wait on them.
    todo.sort(key=lambda p: (p["phase"] != "tune", -est_cost(p)))
    ran = 0
    failed: list[tuple[dict[str, Any], str]] = []
    submitted = {key_of(p) for p in todo}
    bar = tqdm(total=len(todo), desc=f"frontier {grid.name}", unit="run", file=sys.stderr, disable=not progress,
               dynamic_ncols=True)
    ctx = __import__("multiprocessing").get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init) as pool:
        pending: dict[Future[dict[str, Any]], dict[str, Any]] = {pool.submit(execute, p): p for p in todo}
        dependents_done = False
        while pending or not dependents_done:
            if not dependents_done and tuning_complete(grid, store):
                ch = choices(grid, store)
                rest, _ = eval_runs(grid, {c: {p: v["chosen"] for p, v in ps.items()} for c, ps in ch.items()})
                more = [p for p in rest if key_of(p) not in store and key_of(p) not in submitted]
                more.sort(key=lambda p: -est_cost(p))
                for p in more:
                    pending[pool.submit(execute, p)] = p
                    submitted.add(key_of(p))
                bar.total += len(more)
                bar.refresh()
                dependents_done = True
                continue
            if not pending:
                break
            if time.time() > deadline:
                for fut in [f for f in pending if f.cancel()]:
                    del pending[fut]
                dependents_done = True
                if not pending:
                    break
            done, _ = wait(pending, timeout=None if deadline == math.inf else max(1.0, deadline - time.time()),
                           return_when=FIRST_COMPLETED)
            for fut in done:
                p = pending.pop(fut)
                try:
                    row = fut.result()
                except Exception as exc:  # a failed run is reported, the suite goes on (and resumes it)
                    failed.append((p, repr(exc)))
                    print(f"run failed: {key_of(p)}: {exc!r}", file=sys.stderr)
                    bar.update(1)
                    continue
                store.add(row)
                ran += 1
                bar.set_postfix_str(f"{p['phase']} {p['cold']} {p['trace']} {p['policy']} {p['knobs']} s{p['seed']}",
                                    refresh=False)
                bar.update(1)
    bar.close()
    if failed:
        raise SystemExit(f"{len(failed)} run(s) failed (the others are stored; run again to retry): "
                         + "; ".join(f"{key_of(p)}: {e}" for p, e in failed[:5]))
    return ran


def plan(grid: Grid, store: Store, workers: int) -> str:
    tune = tune_runs(grid)
    ev_first, _ = eval_runs(grid, None)
    # Without the choices, dependent eval runs are counted with their first candidate.
    chosen = {c: {p: candidates(grid, p)[0] for p in grid.policies} for c in grid.colds}
    ev, _ = eval_runs(grid, chosen)
    runs = tune + ev
    core = sum(est_cost(p) for p in runs)
    left = sum(est_cost(p) for p in runs if key_of(p) not in store)
    longest = max(est_cost(p) for p in runs)
    return (f"grid {grid.name}: {len(tune)} tuning + {len(ev)} eval runs = {len(runs)}; estimated "
            f"{core/3600:.2f} core-h ({left/3600:.2f} not stored yet), longest run ~{longest:.0f} s; "
            f"~{max(left / workers, longest)/60:.1f} min wall on {workers} workers (estimate from S_PER_DAY, "
            "the full grid's means on 16 cores)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", default="quick", choices=sorted(GRIDS))
    ap.add_argument("--out", help="default reports/bench (reports/bench-quick for --grid quick)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--fresh", action="store_true", help="forget stored runs (start over)")
    ap.add_argument("--plan", action="store_true", help="print the run count and estimated cost, run nothing")
    ap.add_argument("--report-only", action="store_true", help="render from the stored runs, run nothing")
    ap.add_argument("--readme", help="also rewrite the numbers block of this README (e.g. README.md)")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--stop-after", type=float, help="start no run after this many seconds (resume later)")
    ap.add_argument("--prune", action="store_true", help="drop stored runs that are not in this grid from runs.jsonl")
    # A slice of the grid (for checks): each narrows the grid's own list.
    ap.add_argument("--cold", help="comma list of cold settings")
    ap.add_argument("--traces", help="comma list of eval traces")
    ap.add_argument("--policies", help="comma list of policies")
    ap.add_argument("--seeds", help="comma list of seeds (eval; tuning too unless --tune-seeds)")
    ap.add_argument("--tune-seeds", help="comma list of tuning seeds")
    ap.add_argument("--u", help="comma list of utilisation targets (eval and tuning)")
    args = ap.parse_args(argv)
    grid = GRIDS[args.grid]
    if any((args.cold, args.traces, args.policies, args.seeds, args.tune_seeds, args.u)):
        def narrow(vals: tuple[Any, ...], arg: str | None, cast: Any = str) -> tuple[Any, ...]:
            return tuple(cast(x) for x in arg.split(",")) if arg else vals
        grid = dataclasses.replace(
            grid, name=grid.name + "-slice", colds=narrow(grid.colds, args.cold),
            eval_traces=narrow(grid.eval_traces, args.traces), policies=narrow(grid.policies, args.policies),
            seeds=narrow(grid.seeds, args.seeds, int),
            tune_seeds=narrow(narrow(grid.tune_seeds, args.seeds, int), args.tune_seeds, int),
            u=narrow(grid.u, args.u, float),
            u_tune=tuple(u for u in grid.u_tune if u in narrow(grid.u, args.u, float)) or narrow(grid.u, args.u, float))
    out = args.out or ("reports/bench-quick" if args.grid == "quick" else "reports/bench")
    os.makedirs(out, exist_ok=True)
    runs_path = os.path.join(out, "runs.jsonl")
    sessions_path = os.path.join(out, "sessions.jsonl")
    if args.fresh:
        for p in (runs_path, sessions_path):
            if os.path.exists(p):
                os.remove(p)
    store = Store(runs_path)
    if args.plan:
        print(plan(grid, store, args.workers))
        return 0
    t0 = time.time()
    command = "python benchmarks/frontier.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if not args.report_only:
        ran = run_suite(grid, store, args.workers, progress=not args.no_progress, stop_after_s=args.stop_after)
        session = {"grid": grid.name, "started": t0, "wall_s": time.time() - t0, "workers": args.workers,
                   "cores": os.cpu_count(), "runs": ran, "rev": git_rev(), "command": command.strip()}
        if ran:
            with open(sessions_path, "a") as fh:
                fh.write(json.dumps(session) + "\n")
        missing = sum(1 for k in grid_keys(grid, store) if k not in store) if tuning_complete(grid, store) else -1
        if missing:  # stopped by --stop-after: nothing to render yet
            print(f"{ran} run(s) this call; the grid is not complete ({'tuning unfinished' if missing < 0 else f'{missing} left'}): "
                  "run the same command again to resume")
            return 0
    if args.prune:
        keep = set(grid_keys(grid, store))
        rows = [r for k, r in store.rows.items() if k in keep]
        with open(runs_path, "w") as fh:
            for r in rows:
                fh.write(json.dumps(r, separators=(",", ":")) + "\n")
        store = Store(runs_path)
    sessions = []
    if os.path.exists(sessions_path):
        with open(sessions_path) as fh:
            sessions = [json.loads(line) for line in fh if line.strip()]
    sessions = [s for s in sessions if s["grid"] == grid.name]
    if args.report_only and sessions and sessions[-1].get("command"):
        command = sessions[-1]["command"]  # the suite's command, not the re-rendering's
    results = aggregate(grid, store, sessions=sessions, command=command.strip())
    results = json.loads(json.dumps(clean(results), allow_nan=False))  # what the file holds
    with open(os.path.join(out, "results.json"), "w") as fh:
        json.dump(results, fh, indent=1, allow_nan=False)
        fh.write("\n")
    import frontier_render as R

    R.write_report(results, out)
    if args.readme:
        R.update_readme(args.readme, results, os.path.relpath(out, os.path.dirname(os.path.abspath(args.readme))))
    print(f"wrote {out}/results.json, README.md and plots in {time.time() - t0:.0f} s")
    return 0


def clean(v: Any) -> Any:
    """JSON-safe: NaN and infinities become null, numpy scalars plain numbers."""
    if isinstance(v, Mapping):
        return {str(k): clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [clean(x) for x in v]
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


if __name__ == "__main__":
    raise SystemExit(main())
