"""GPU-type benchmark (issue 18 item 4): cost per 1M requests of the cheapest mix of capacity
classes against the best single GPU type at the same attainment, through a stock-out of the
cheapest type, and for services whose load is a fraction of one large GPU.

Every fleet is an InferenceServiceSpec with spec.capacity.classes (a single type: one class; the
"h100+spot" fleet: the onDemand/spot form) run by the operator's decision path, control.step with
GpufleetPolicy (core.mix, core.classes), on SimFleet's per-class node pools (sim/gputypes.py).

    python benchmarks/gputype_bench.py                      # full: 1 day per run
    python benchmarks/gputype_bench.py --quick --out /tmp/q  # 2 h slices, a small sweep
    python benchmarks/gputype_bench.py --tiny --out /tmp/t   # 30 min, one run per fleet (unit test)

Writes OUT/results.json (every run and the verdicts, computed here from the runs), OUT/README.md
(rendered from results.json) and OUT/gputypes.png. Run from the repository root.

Prices, USD per GPU-hour (sources; the figures are list prices on the dates given, not quotes):
- H100 80GB: on-demand 3.00, spot 2.25: Google Cloud A3-High, "GPU cost management for ML teams",
  costnimbus.com, March 2026 (https://costnimbus.com/article/gpu-cost-management-ml-teams):
  "GCP A3-High ~$3.00" on-demand, "GCP A3-High Spot ~$2.25/GPU-hr".
- L4 24GB: on-demand 0.75, the middle of "GCP g2-standard-4 (1x L4): ~$0.70-0.80/hr" (same page);
  spot 0.30 = 0.4 x on-demand: Google's Spot VMs pricing page says spot prices "always provide
  discounts of 60-91%" (https://cloud.google.com/spot-vms/pricing): the least discount, so an
  upper bound on the L4's spot price.
- MIG 3g.40gb on an H100 80GB: half the H100's price (two 3g.40gb instances per GPU, NVIDIA MIG
  user guide's H100 profiles), the way a node shared by two pods is split.
Relative throughputs: sim/gputypes.py (datasheet ratios applied to the calibrated H100 model).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "operator"))

from gpufleet.sim import gputypes as G  # noqa: E402
from gpufleet.sim import traces as T  # noqa: E402
from gpufleet.sim.nodes import StockOut  # noqa: E402

PRICES = {"h100": (3.00, 2.25), "l4": (0.75, 0.30), "h100-mig-3g-40gb": (1.50, 1.125)}
GOAL = 0.999
STOCKOUT_COST_GOAL = 1.10
SMALL_COST_GOAL = 0.60
SPOT_MAX_SHARE = 0.7
SOURCE = ("m-mid", 11)  # ServeGen language m-mid, day 11 (a held-out day of the frontier benchmark)
SCALE = 0.1  # the frontier benchmark's ServeGen scale: ~190 req/s mean


@dataclass(frozen=True)
class Task:
    scenario: str
    condition: str
    fleet: str
    utilization: float
    target_s: float
    load: float  # the small scenario's mean load in H100 replicas (0: the large service)


# Size of a run: the trace window (seconds from midnight, length), the sweep, the stock-out window.
# "us": the utilisation sweep of the large service, "small_us": of the small ones (a fleet of one or
# two replicas has its headroom in its granularity). A type that cannot reach the goal on this trace
# at any size (its best attainment, from its profile, is below it) runs at the first value only.
SIZES: dict[str, dict[str, Any]] = {
    "full": {"window": None, "us": (0.45, 0.5, 0.55, 0.6), "small_us": (0.5, 0.6, 0.7, 0.8, 0.9),
             "stock_out": (10 * 3600, 12 * 3600), "loads": (0.1, 0.25, 0.5), "targets": (1.0, 2.0)},
    "quick": {"window": (13 * 3600, 2 * 3600), "us": (0.5, 0.6), "small_us": (0.5, 0.7, 0.9),
              "stock_out": (1800, 3600), "loads": (0.1, 0.5), "targets": (2.0,)},
    "tiny": {"window": (13 * 3600, 1800), "us": (0.5,), "small_us": (0.5,), "stock_out": (600, 1200),
             "loads": (0.1,), "targets": (2.0,)},
}


def load_trace(size: str, load_h100: float, h100_rps: float, seed: int = 0) -> T.Trace:
    full = T.load_servegen_clients(T.servegen_folder(SOURCE[0]), scale=SCALE, seed=seed)
    tr = T.days(full, SOURCE[1], SOURCE[1])
    if SIZES[size]["window"] is not None:
        tr = T.window(tr, *SIZES[size]["window"])
    if load_h100 > 0:
        tr = T.scale_load(tr, load_h100 * h100_rps / float(tr.counts.mean()), seed=seed)
    return tr


def fleets(profiles: dict[str, G.TypeProfile],
           stock_out: tuple[StockOut, ...] = ()) -> dict[str, list[G.SimClass]]:
    """The fleets' classes; `stock_out`: H100 spot's (the cheapest per request)."""
    def cls(t: str, spot: bool = False) -> G.SimClass:
        return G.SimClass(f"{t}-spot" if spot else t, G.TYPES[t], PRICES[t][1 if spot else 0], profiles[t],
                          spot=spot, max_share=SPOT_MAX_SHARE if spot else 1.0, stock_outs=stock_out if spot else ())

    return {
        # gpufleet with a class list: H100 on-demand and spot, and MIG slices. Not the L4: with this
        # model it misses the TTFT target on long prompts at any size (see the README's table), so a
        # user would not list it; it is compared as a single type.
        "classes": [cls("h100"), cls("h100", True), cls("h100-mig-3g-40gb")],
        # The onDemand/spot form (no class list): H100 on-demand and spot, spot.maxFraction 0.7.
        "h100+spot": [cls("h100"), cls("h100", True)],
        "h100": [cls("h100")],
        "h100-mig-3g-40gb": [cls("h100-mig-3g-40gb")],
        "l4": [cls("l4")],
    }


SMALL_FLEETS = ("classes-on-demand", "h100", "h100-mig-3g-40gb", "l4")


@functools.lru_cache(maxsize=None)
def _setup(size: str, load: float, target_s: float) -> tuple[T.Trace, dict[str, G.TypeProfile]]:
    """The trace and the types' profiles on it (once per worker process)."""
    ref = load_trace(size, 0.0, 1.0)
    h100 = G.profile(G.H100, ref, target_s)
    tr = load_trace(size, load, h100.rps) if load > 0 else ref
    return tr, {t: G.profile(gt, tr, target_s) for t, gt in G.TYPES.items()}


def _run(task: Task, size: str) -> dict[str, Any]:
    tr, profiles = _setup(size, task.load, task.target_s)
    all_fleets = fleets(profiles)
    if task.condition == "stock-out":
        start, end = SIZES[size]["stock_out"]
        all_fleets = fleets(profiles, (StockOut(start, end, reclaim=True),))
    all_fleets["classes-on-demand"] = [c for c in all_fleets["classes"] if not c.spot]
    t0 = time.perf_counter()
    res = G.simulate(tr, all_fleets[task.fleet], utilization=task.utilization, target_s=task.target_s,
                     legacy=task.fleet == "h100+spot", name=task.fleet)
    row = {**task.__dict__, **res.row(), "wall_s": round(time.perf_counter() - t0, 2),
           "stock_out_s": list(SIZES[size]["stock_out"]),
           "mean_rps": float(tr.counts.mean()),
           "rps_per_replica": {t: round(p.rps, 3) for t, p in profiles.items()},
           "best_attainment": {t: round(float(p.ok_at_wait[0]), 5) for t, p in profiles.items()}}
    if task.condition == "stock-out" and task.fleet == "classes":
        row["timeline"] = {"t": res.t.tolist(), "load": res.load.round(2).tolist(),
                           "capacity": {k: v.round(2).tolist() for k, v in res.capacity.items()},
                           "missed": res.missed.round(2).tolist()}
    return row


def capped(size: str, target_s: float) -> set[str]:
    """Single-type fleets that cannot reach the goal at any size: their best attainment (no wait at
    all, from the type's profile) is below it. They are not run: the policy would chase the TTFT
    target to replicas.max for nothing."""
    _, profiles = _setup(size, 0.0, target_s)
    return {t for t, p in profiles.items() if float(p.ok_at_wait[0]) < GOAL}


def tasks(size: str) -> list[Task]:
    cfg = SIZES[size]
    out = []
    cap = {target: capped(size, target) for target in {1.0, *cfg["targets"]}}
    for fleet in ("classes", "h100+spot", "h100", "h100-mig-3g-40gb", "l4"):
        for u in () if fleet in cap[1.0] else cfg["us"]:
            out.append(Task("large", "normal", fleet, u, 1.0, 0.0))
            if "spot" in fleet or fleet == "classes":
                out.append(Task("large", "stock-out", fleet, u, 1.0, 0.0))
    for load in cfg["loads"]:
        for target in cfg["targets"]:
            for fleet in SMALL_FLEETS:
                for u in () if fleet in cap[target] else cfg["small_us"]:
                    out.append(Task("small", "normal", fleet, u, target, load))
    return out


def cheapest(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    ok = [r for r in rows if r["attainment"] >= GOAL]
    return min(ok, key=lambda r: r["cost_per_1m"]) if ok else None


def mean_replicas(run: dict[str, Any]) -> dict[str, float]:
    """Replicas billed on average over the run, per class."""
    hours = run["arrived"] / run["mean_rps"] / 3600.0
    return {k: round(v / hours, 3) for k, v in run["replica_hours"].items() if v > 0}


def stock_out_why(so: dict[str, Any], base: dict[str, Any], ratio: float) -> str:
    """Where a stock-out run falls short, from its own figures: by how much, when the requests
    were missed (inside the stock-out window or not), and what it bought instead."""
    parts = []
    if so["attainment"] < GOAL:
        missed = so.get("timeline", {}).get("missed", [])
        t = so.get("timeline", {}).get("t", [])
        start, end = so["stock_out_s"]
        inside = sum(m for x, m in zip(t, missed) if start <= x < end + 900)
        total = sum(missed)
        parts.append(f"attainment {GOAL - so['attainment']:.4%} below the goal; "
                     + (f"{inside / total:.0%} of the missed requests fell in the stock-out window "
                        f"(and 15 min after)" if total > 0 else "no per-minute record"))
    if ratio > STOCKOUT_COST_GOAL:
        more = {k: round(v - base["replica_hours"].get(k, 0.0), 1) for k, v in so["replica_hours"].items()}
        parts.append(f"cost {ratio - STOCKOUT_COST_GOAL:.3f}x over the bound; replica-hours against no "
                     f"stock-out: {more}")
    return "; ".join(parts)


def verdicts(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Every verdict from the runs: nothing here is typed in."""
    def sel(**kw: Any) -> list[dict[str, Any]]:
        return [r for r in rows if all(r[k] == v for k, v in kw.items())]

    out: dict[str, Any] = {"goal_attainment": GOAL}
    # Large service: the class mix against every single type (and today's two-class form).
    best = {f: cheapest(sel(scenario="large", condition="normal", fleet=f))
            for f in ("classes", "h100+spot", "h100", "h100-mig-3g-40gb", "l4")}
    singles = {f: b for f, b in best.items() if f not in ("classes", "h100+spot") and b is not None}
    mix = best["classes"]
    large: dict[str, Any] = {"cheapest_at_goal": {f: (None if b is None else
                                                      {k: b[k] for k in ("utilization", "attainment", "cost_per_1m")})
                                                  for f, b in best.items()}}
    if mix is not None and singles:
        f_best = min(singles, key=lambda f: singles[f]["cost_per_1m"])
        large["best_single_type"] = f_best
        large["ratio_vs_best_single"] = mix["cost_per_1m"] / singles[f_best]["cost_per_1m"]
        if best["h100+spot"] is not None:
            large["ratio_vs_two_class_form"] = mix["cost_per_1m"] / best["h100+spot"]["cost_per_1m"]
        # Stock-out of the cheapest type (H100 spot) at the same utilisation as the mix's choice.
        so = [r for r in sel(scenario="large", condition="stock-out", fleet="classes")
              if r["utilization"] == mix["utilization"]]
        if so:
            s = so[0]
            ratio = s["cost_per_1m"] / mix["cost_per_1m"]
            large["stock_out"] = {"utilization": s["utilization"], "attainment": s["attainment"],
                                  "cost_per_1m": s["cost_per_1m"], "ratio_to_no_stock_out": ratio,
                                  "notes": s["outage_notes"][:4],
                                  "meets_goal": s["attainment"] >= GOAL and ratio <= STOCKOUT_COST_GOAL,
                                  "why": stock_out_why(s, mix, ratio)}
    out["large"] = large
    # Small services: a smaller class or MIG slice against the H100-only fleet.
    small = []
    for load in sorted({r["load"] for r in rows if r["scenario"] == "small"}):
        for target in sorted({r["target_s"] for r in rows if r["scenario"] == "small"}):
            b = {f: cheapest(sel(scenario="small", load=load, target_s=target, fleet=f)) for f in SMALL_FLEETS}
            h = b["h100"]
            smaller = {f: v for f, v in b.items() if f != "h100" and v is not None}
            item: dict[str, Any] = {"load_h100": load, "target_s": target,
                                    "cheapest_at_goal": {f: (None if v is None else
                                                             {k: v[k] for k in ("utilization", "attainment",
                                                                                "cost_per_1m")})
                                                         for f, v in b.items()}}
            if h is not None and smaller:
                f_best = min(smaller, key=lambda f: smaller[f]["cost_per_1m"])
                ratio = smaller[f_best]["cost_per_1m"] / h["cost_per_1m"]
                item.update({"best_smaller": f_best, "ratio_vs_h100_only": ratio,
                             "meets_goal": ratio <= SMALL_COST_GOAL,
                             "mean_replicas": {f_best: mean_replicas(smaller[f_best]), "h100": mean_replicas(h)}})
            small.append(item)
    out["small"] = small
    return out


def per_rps(res: dict[str, Any]) -> str:
    """What a request/s of capacity costs on each on-demand type, from the prices and the profiles."""
    cost = {t: res["prices"][t][0] / res["per_type"][t]["rps_per_replica"] for t in ("h100", "h100-mig-3g-40gb")}
    ratio = cost["h100-mig-3g-40gb"] / cost["h100"]
    share = res["per_type"]["h100-mig-3g-40gb"]["rps_per_replica"] / res["per_type"]["h100"]["rps_per_replica"]
    return (f"Per request/s of capacity a MIG 3g.40gb slice costs {ratio:.2f}x an H100 (it serves "
            f"{share:.2f} of an H100 for half its price): slices pay only for the part of the need below "
            f"one H100, and the mix runs whole H100s once the need (the load's daily peaks over the "
            f"utilisation target, and the warm pool) passes about {share:.2f} of one. The H100-only "
            "fleet's bill includes the warm pool's standby H100 (the replicas billed on average, above); "
            "the mix's standby capacity fits in the spare capacity of the pods it runs.")


def render(res: dict[str, Any]) -> str:
    v = res["verdicts"]
    lines = ["# GPU types: the cheapest mix of capacity classes", "",
             f"Generated by `benchmarks/gputype_bench.py{'' if res['size'] == 'full' else ' --' + res['size']}` "
             f"({res['runs']} runs, {res['wall_s']:.0f} s). Every figure below is read from results.json.", "",
             f"Trace: ServeGen m-mid day 11 at the frontier benchmark's scale ({res['window']}). "
             "Every fleet is an InferenceService spec with `spec.capacity.classes` (a single type is a list "
             "of one class; `h100+spot` is the onDemand/spot form) sized by the operator's own decision "
             "path, `control.step` with `GpufleetPolicy` (its last stage `core.mix` picks the replicas per "
             "class with `core.classes.choose`), on the simulator's per-class node pools (sim/gputypes.py). "
             "The sweep is the spec's `scaling.targetUtilization`; a fleet's figure is its cheapest run at "
             f"or above {v['goal_attainment']:.1%} attainment (same SLO for every type: the reference "
             "deadline). The policy sizes in replicas of the smallest listed class "
             "(`scaling.targetRpsPerReplica`, as docs/gpu-types.md advises).", "",
             "Prices (USD per GPU-hour; sources in benchmarks/gputype_bench.py): " +
             ", ".join(f"{k} {p[0]:.3g} on-demand / {p[1]:.3g} spot" for k, p in res["prices"].items()) + ".", ""]
    lg = v["large"]
    lines += ["## One large service", "",
              "| fleet | utilisation | attainment | cost per 1M requests |", "|---|---|---|---|"]
    for f, b in lg["cheapest_at_goal"].items():
        best = res["profile_best"]["1"].get(f)
        never = ("never reaches the goal" + (f" (best {best:.2%}: its own first-token times, no wait)"
                                               if best is not None and best < v["goal_attainment"] else ""))
        lines.append(f"| {f} | " + (f"{never} | | |" if b is None else
                                     f"{b['utilization']:.2f} | {b['attainment']:.4%} | {b['cost_per_1m']:.2f} |"))
    if "ratio_vs_best_single" in lg:
        lines += ["", f"The class mix costs **{lg['ratio_vs_best_single']:.3f}x** the best single type "
                      f"({lg['best_single_type']}) per request"
                  + (f", {lg['ratio_vs_two_class_form']:.3f}x the onDemand/spot form (H100 on-demand + spot)."
                     if "ratio_vs_two_class_form" in lg else ".")]
    if "stock_out" in lg:
        s = lg["stock_out"]
        lines += ["", "### Stock-out of the cheapest type", "",
                  f"H100 spot (the cheapest per request) is stocked out from {res['stock_out_s'][0] / 3600:.2f} h to "
                  f"{res['stock_out_s'][1] / 3600:.2f} h of the run (no new nodes), its running replicas noticed "
                  "(120 s) at the start.", "",
                  f"- attainment {s['attainment']:.4%}, cost per 1M {s['cost_per_1m']:.2f}: "
                  f"{s['ratio_to_no_stock_out']:.3f}x the same fleet without the stock-out "
                  f"(goal: >= {v['goal_attainment']:.1%} at <= {STOCKOUT_COST_GOAL}x): "
                  f"**{'met' if s['meets_goal'] else 'not met'}**",
                  *([f"- why: {s['why']}"] if not s["meets_goal"] else []),
                  "- the operator's reasons during it (first of each kind):", ""]
        lines += [f"  - `{n}`" for n in s["notes"]]
    lines += ["", "## Services whose load is a fraction of one H100", "",
              "| load (H100 replicas) | TTFT target | H100 only | MIG 3g.40gb | L4 | classes (on-demand) | "
              "best smaller / H100 only |", "|---|---|---|---|---|---|---|"]
    why: list[str] = []
    for it in v["small"]:
        c = it["cheapest_at_goal"]

        def cell(f: str, c: dict[str, Any] = c, target: float = it["target_s"]) -> str:
            best = res["profile_best"][f"{target:g}"].get(f)
            if c[f] is None:
                return f"cannot (best {best:.2%})" if best is not None and best < v["goal_attainment"] else "below goal"
            return f"{c[f]['cost_per_1m']:.2f}"

        ratio = (f"{it['ratio_vs_h100_only']:.3f}x ({it['best_smaller']}) "
                 f"**{'met' if it['meets_goal'] else 'not met'}**") if "ratio_vs_h100_only" in it else "-"
        if not it.get("meets_goal", True):
            mr = it["mean_replicas"]
            why.append(f"- {it['load_h100']:g} H100 at {it['target_s']:g} s: {it['ratio_vs_h100_only']:.3f}x, "
                       f"{it['ratio_vs_h100_only'] - SMALL_COST_GOAL:.3f}x over the bound; replicas billed on "
                       f"average: {it['best_smaller']} {mr[it['best_smaller']]}, h100 only {mr['h100']}")
        lines.append(f"| {it['load_h100']:g} | {it['target_s']:g} s | {cell('h100')} | {cell('h100-mig-3g-40gb')} | "
                     f"{cell('l4')} | {cell('classes-on-demand')} | {ratio} |")
    lines += ["", f"Goal: <= {SMALL_COST_GOAL}x the H100-only fleet. 'cannot': the type's own first-token "
              f"times (no wait at all) miss the target on more than {1 - v['goal_attainment']:.1%} of the "
              "prompts, so no fleet of it can reach the goal and it is not run (an L4 serves this 8B bf16 "
              "model with a small batch and a slower prefill); 'below goal': no run of the sweep reached it.",
              *([""] + ["Where the goal is not met (from results.json):"] + why + ["", per_rps(res)] if why else []),
              "",
              "Per-replica load-test capacity (req/s) and the best attainment a type can reach on this "
              f"trace at the 1 s target: {res['per_type']}.", "",
              "![cost and stock-out](gputypes.png)", "",
              "Model and its limits: see the docstring of operator/gpufleet/sim/gputypes.py (fluid FIFO "
              "queue, capacity-aware balancing, no sub-second queueing, shared cold-start distribution)."]
    return "\n".join(lines) + "\n"


def plot(res: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 4.5))
    lg = res["verdicts"]["large"]["cheapest_at_goal"]
    names = [f for f, b in lg.items() if b is not None]
    a1.bar(names, [lg[f]["cost_per_1m"] for f in names], color="#4477aa")
    a1.set_ylabel("USD per 1M requests (cheapest run at goal)")
    a1.set_title("one large service")
    a1.tick_params(axis="x", rotation=20)
    tl = next((r["timeline"] for r in res["runs_data"] if "timeline" in r
               and r["utilization"] == res["verdicts"]["large"].get("stock_out", {}).get("utilization")), None)
    if tl is not None:
        hours = [x / 3600 for x in tl["t"]]
        a2.stackplot(hours, *tl["capacity"].values(), labels=list(tl["capacity"]), alpha=0.7)
        a2.plot(hours, tl["load"], color="black", lw=0.8, label="load")
        a2.set_xlabel("hour")
        a2.set_ylabel("req/s (serving capacity by class)")
        a2.set_title("stock-out of H100 spot")
        a2.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 h slices, a small sweep")
    ap.add_argument("--tiny", action="store_true", help="30 min, one run per fleet (the unit test)")
    ap.add_argument("--out", default=os.path.join(ROOT, "reports", "gputypes"))
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    size = "tiny" if args.tiny else "quick" if args.quick else "full"
    todo = tasks(size)
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as ex:
            rows = list(ex.map(_run, todo, [size] * len(todo)))
    else:
        rows = [_run(t, size) for t in todo]
    first = next(r for r in rows if r["scenario"] == "large")
    res: dict[str, Any] = {
        "size": size, "runs": len(rows), "stock_out_s": list(SIZES[size]["stock_out"]),
        "window": ("the whole day" if SIZES[size]["window"] is None else
                   "{:g} h from {:g}:00".format(SIZES[size]["window"][1] / 3600, SIZES[size]["window"][0] / 3600)), "wall_s": time.perf_counter() - t0,
        "prices": {k: list(v) for k, v in PRICES.items()},
        "per_type": {t: {"rps_per_replica": first["rps_per_replica"][t], "best_attainment": first["best_attainment"][t]}
                     for t in first["rps_per_replica"]},
        # Each type's best attainment (its own first-token times, no wait) per TTFT target.
        "profile_best": {f"{target:g}": {t: round(float(p.ok_at_wait[0]), 5) for t, p in _setup(size, 0.0, target)[1].items()}
                         for target in sorted({1.0, *SIZES[size]["targets"]})},
        "runs_data": rows,
    }
    res["verdicts"] = verdicts(rows)
    write(res, args.out)
    print(json.dumps(res["verdicts"], indent=1))
    return res


def write(res: dict[str, Any], out: str) -> None:
    """results.json (one line per run: the timelines are long), README.md and the plot."""
    head = {k: v for k, v in res.items() if k != "runs_data"}
    with open(os.path.join(out, "results.json"), "w") as fh:
        fh.write(json.dumps(head, indent=1)[:-2] + ',\n "runs_data": [\n')
        fh.write(",\n".join(json.dumps(r) for r in res["runs_data"]))
        fh.write("\n ]\n}\n")
    with open(os.path.join(out, "README.md"), "w") as fh:
        fh.write(render(res))
    plot(res, os.path.join(out, "gputypes.png"))


if __name__ == "__main__":
    main()
