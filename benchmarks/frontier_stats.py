"""Frontiers, intervals, tuning choices and verdicts: pure functions of the runs' results.

Nothing here runs a simulation or formats prose: `benchmarks/frontier.py` feeds it the stored runs
and writes what it returns to results.json; `benchmarks/frontier_render.py` renders that data.

Definitions (the report's Method section says the same):
- A policy's *frontier* on one trace, cold-start setting and seed: its (GPU-hours, attainment)
  points over its swept knob, reduced to the Pareto-efficient ones (no other point is cheaper and
  at least as good).
- *GPU-hours at the goal* (99.9 %): along that frontier, interpolated between the two efficient
  points that bracket the goal, linearly in GPU-hours against "nines" (-log10(1 - attainment)).
  If even the cheapest efficient point is above the goal, its GPU-hours are an upper bound
  ("upper"); if no point reaches the goal there is no value ("below").
- Intervals: 95 % Student-t intervals over seeds (mean +- t(0.975, n-1) * sd / sqrt(n)). Ratios
  are paired: the ratio is formed per seed (the same seed draws the same trace and cold starts
  for every policy) and the interval is over those ratios.
- Verdicts are data: status "met", "not_met" or "undetermined", with reason codes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

GOAL = 0.999
RATIO_GOALS = {"warm": 0.95, "typical": 0.80, "large": 0.80}  # gpufleet / best baseline, issue 16
LOWER_BOUND_GOAL = 1.25  # gpufleet / lower bound
BASELINES = ("hpa", "keda", "knative-kpa")
GPUFLEET = "gpufleet"
LEVEL = 0.95


# ---------------------------------------------------------------------------------------------
# Intervals


def t_interval(values: Sequence[float], level: float = LEVEL, *,
               clip: tuple[float, float] | None = None) -> dict[str, Any]:
    """Mean and Student-t interval over `values` (seeds); n = 1 gives a zero-width interval.
    `clip` bounds the interval to a quantity's range (attainment: [0, 1])."""
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        return {"mean": None, "lo": None, "hi": None, "n": 0}
    mean = math.fsum(xs) / n  # fsum: the same mean whatever order the runs finished in
    if n == 1:
        return {"mean": mean, "lo": mean, "hi": mean, "n": 1}
    from scipy.stats import t as student_t  # type: ignore[import-untyped]

    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = float(student_t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    lo, hi = mean - half, mean + half
    if clip is not None:
        lo, hi = max(lo, clip[0]), min(hi, clip[1])
    return {"mean": mean, "lo": lo, "hi": hi, "n": n}


# ---------------------------------------------------------------------------------------------
# Frontiers


def nines(attainment: float) -> float:
    return -math.log10(max(1.0 - attainment, 1e-9))


def efficient(points: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """The Pareto-efficient (gpu_hours, attainment) points, cheapest first (attainment rising)."""
    out: list[tuple[float, float]] = []
    for g, a in sorted(points, key=lambda p: (p[0], -p[1])):
        if not out or a > out[-1][1]:
            out.append((g, a))
    return out


@dataclass(frozen=True)
class AtGoal:
    gpu_hours: float | None  # None: the frontier does not reach the goal
    bound: str  # "exact" (interpolated), "upper" (every point above the goal), "below" (none reaches)
    max_attainment: float

    def as_dict(self) -> dict[str, Any]:
        return {"gpu_hours": self.gpu_hours, "bound": self.bound, "max_attainment": self.max_attainment}


def gpu_hours_at(points: Iterable[tuple[float, float]], goal: float = GOAL) -> AtGoal:
    """GPU-hours at attainment `goal` along the frontier of (gpu_hours, attainment) points."""
    front = efficient(points)
    if not front:
        return AtGoal(None, "below", float("nan"))
    top = front[-1][1]
    if top < goal:
        return AtGoal(None, "below", top)
    i = next(k for k, (_, a) in enumerate(front) if a >= goal)
    if i == 0:
        return AtGoal(front[0][0], "upper", top)
    (g0, a0), (g1, a1) = front[i - 1], front[i]
    x0, x1, xg = nines(a0), nines(a1), nines(goal)
    w = (xg - x0) / (x1 - x0) if x1 > x0 else 1.0
    return AtGoal(g0 + w * (g1 - g0), "exact", top)


def frontier_summary(runs: Sequence[Mapping[str, Any]], goal: float = GOAL) -> dict[str, Any]:
    """One policy on one trace and cold setting: `runs` are its rows ({"u", "seed", "attainment",
    "gpu_hours"}). Returns the mean curve over seeds per knob value (with intervals) and the
    GPU-hours at the goal per seed and over seeds."""
    by_u: dict[float, list[Mapping[str, Any]]] = {}
    by_seed: dict[int, list[tuple[float, float]]] = {}
    for r in runs:
        by_u.setdefault(float(r["u"]), []).append(r)
        by_seed.setdefault(int(r["seed"]), []).append((float(r["gpu_hours"]), float(r["attainment"])))
    points = []
    for u in sorted(by_u):
        rs = by_u[u]
        points.append({"u": u, "seeds": sorted(int(r["seed"]) for r in rs),
                       "attainment": t_interval([r["attainment"] for r in rs], clip=(0.0, 1.0)),
                       "gpu_hours": t_interval([r["gpu_hours"] for r in rs])})
    per_seed = {str(s): gpu_hours_at(pts, goal).as_dict() for s, pts in sorted(by_seed.items())}
    return {"points": points, "at_goal": at_goal_over_seeds(per_seed),
            "seed_points": {str(s): [list(p) for p in pts] for s, pts in sorted(by_seed.items())}}


def at_goal_over_seeds(per_seed: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """GPU-hours at the goal over seeds: reached only if every seed's frontier reaches it; the
    bound is "upper" if any seed's is."""
    vals = [v["gpu_hours"] for v in per_seed.values()]
    bounds = {v["bound"] for v in per_seed.values()}
    reached = bool(per_seed) and all(v is not None for v in vals)
    bound = "below" if not reached else ("upper" if "upper" in bounds else "exact")
    out: dict[str, Any] = {"reached": reached, "bound": bound, "per_seed": dict(per_seed),
                           "seeds_below": sorted(s for s, v in per_seed.items() if v["gpu_hours"] is None)}
    out["gpu_hours"] = t_interval([float(v) for v in vals]) if reached else None
    return out


def paired_ratio(num: Mapping[str, Mapping[str, Any]], den: Mapping[str, float | None]) -> dict[str, Any] | None:
    """Per-seed ratio num/den over the seeds both have, with its t-interval (None if any is missing)."""
    seeds = sorted(set(num) & set(den))
    ratios = []
    for s in seeds:
        a, b = num[s].get("gpu_hours"), den[s]
        if a is None or b is None or b <= 0:
            return None
        ratios.append(float(a) / float(b))
    if not ratios:
        return None
    out = t_interval(ratios)
    out["per_seed"] = dict(zip(seeds, ratios))
    return out


# ---------------------------------------------------------------------------------------------
# Verdicts


def verdict(frontiers: Mapping[str, Mapping[str, Any]], lower_bound: Mapping[str, float], *,
            ratio_goal: float, lb_goal: float = LOWER_BOUND_GOAL) -> dict[str, Any]:
    """gpufleet against the best baseline's frontier and against the lower bound on one trace and
    cold setting. `frontiers` maps policy -> frontier_summary(...); `lower_bound` seed -> GPU-h."""
    g = frontiers.get(GPUFLEET)
    out: dict[str, Any] = {"ratio_goal": ratio_goal, "lb_goal": lb_goal}
    # The best baseline: the lowest mean GPU-hours at the goal among those whose frontier reaches
    # it on every seed.
    reaching = {p: f["at_goal"] for p, f in frontiers.items()
                if p in BASELINES and f["at_goal"]["reached"]}
    best = min(reaching, key=lambda p: reaching[p]["gpu_hours"]["mean"]) if reaching else None
    out["best_baseline"] = best
    out["baselines_below_goal"] = sorted(p for p in BASELINES if p in frontiers and p not in reaching)
    g_at = g["at_goal"] if g is not None else None
    # vs the best baseline
    reasons: list[str] = []
    ratio = None
    if g_at is None:
        status = "undetermined"
        reasons.append("gpufleet_not_run")
    elif not g_at["reached"]:
        status = "not_met"
        reasons.append("gpufleet_below_goal")
    elif best is None:
        status = "undetermined"
        reasons.append("no_baseline_reaches_goal")
    else:
        b_at = reaching[best]
        ratio = paired_ratio(g_at["per_seed"], {s: v["gpu_hours"] for s, v in b_at["per_seed"].items()})
        if ratio is None:
            status = "undetermined"
            reasons.append("no_common_seeds")
        elif ratio["mean"] <= ratio_goal:
            # A baseline whose every knob value beats the goal may be cheaper still at the goal.
            if b_at["bound"] == "upper":
                status = "undetermined"
                reasons.append("baseline_above_goal_at_every_knob")
            else:
                status = "met"
        else:
            if g_at["bound"] == "upper":
                status = "undetermined"
                reasons.append("gpufleet_above_goal_at_every_knob")
            else:
                status = "not_met"
                reasons.append("ratio_above_goal")
    out["at_common"] = at_common(frontiers)
    out["vs_baseline"] = {"status": status, "reasons": reasons, "ratio": ratio,
                          "ci_clear": ratio is not None and (ratio["hi"] <= ratio_goal or ratio["lo"] > ratio_goal)}
    # vs the lower bound
    lb_reasons: list[str] = []
    lb_ratio = None
    if g_at is None or not g_at["reached"]:
        lb_status = "not_met" if g_at is not None else "undetermined"
        lb_reasons.append("gpufleet_below_goal" if g_at is not None else "gpufleet_not_run")
    else:
        lb_ratio = paired_ratio(g_at["per_seed"], {s: lower_bound.get(s) for s in g_at["per_seed"]})
        if lb_ratio is None:
            lb_status = "undetermined"
            lb_reasons.append("lower_bound_missing")
        elif lb_ratio["mean"] <= lb_goal:
            lb_status = "met"
        elif g_at["bound"] == "upper":
            lb_status = "undetermined"
            lb_reasons.append("gpufleet_above_goal_at_every_knob")
        else:
            lb_status = "not_met"
            lb_reasons.append("ratio_above_goal")
    out["vs_lower_bound"] = {"status": lb_status, "reasons": lb_reasons, "ratio": lb_ratio,
                             "ci_clear": lb_ratio is not None and (lb_ratio["hi"] <= lb_goal or lb_ratio["lo"] > lb_goal)}
    # The bound checked: any policy reaching the goal below it on some seed.
    out["below_bound"] = {
        p: sorted(s for s, a in f["at_goal"]["per_seed"].items()
                  if a["gpu_hours"] is not None and lower_bound.get(s) is not None and a["gpu_hours"] < lower_bound[s])
        for p, f in sorted(frontiers.items())}
    out["below_bound"] = {p: seeds for p, seeds in out["below_bound"].items() if seeds}
    # every policy against the lower bound
    out["policies_vs_lower_bound"] = {
        p: (paired_ratio(f["at_goal"]["per_seed"], {s: lower_bound.get(s) for s in f["at_goal"]["per_seed"]})
            if f["at_goal"]["reached"] else None)
        for p, f in sorted(frontiers.items())}
    return out


def seed_points(f: Mapping[str, Any]) -> dict[str, list[tuple[float, float]]]:
    """A frontier_summary's per-seed (gpu_hours, attainment) points."""
    return {s: [tuple(p) for p in pts] for s, pts in f.get("seed_points", {}).items()}


def at_common(frontiers: Mapping[str, Mapping[str, Any]], goal: float = GOAL) -> dict[str, Any] | None:
    """Where 99.9 % is out of some policy's reach: gpufleet against the best baseline at the highest
    attainment every frontier reaches on every seed (in 0.01 pp steps, at most the goal). A
    comparison beside the verdict, never the verdict."""
    if GPUFLEET not in frontiers:
        return None
    pols = [p for p in frontiers if p == GPUFLEET or p in BASELINES]
    tops = [a for p in pols for pts in seed_points(frontiers[p]).values() for a in [max(x[1] for x in pts)] if pts]
    if not tops:
        return None
    level = min(goal, math.floor(min(tops) * 1e4) / 1e4)
    per = {p: {s: gpu_hours_at(pts, level).as_dict() for s, pts in seed_points(frontiers[p]).items()} for p in pols}
    agg = {p: at_goal_over_seeds(v) for p, v in per.items()}
    base = {p: a for p, a in agg.items() if p in BASELINES and a["reached"]}
    if not base or not agg[GPUFLEET]["reached"]:
        return {"attainment": level, "best_baseline": None, "ratio": None, "gpu_hours": {}}
    best = min(base, key=lambda p: base[p]["gpu_hours"]["mean"])
    ratio = paired_ratio(agg[GPUFLEET]["per_seed"], {s: v["gpu_hours"] for s, v in base[best]["per_seed"].items()})
    return {"attainment": level, "best_baseline": best, "ratio": ratio,
            "bounds": {p: a["bound"] for p, a in agg.items()},
            "gpu_hours": {p: a["gpu_hours"] for p, a in agg.items()}}


def overall(verdicts: Sequence[Mapping[str, Any]], key: str) -> str:
    """One status over several traces: met only if met on every one; not_met if any is not met."""
    states = [v[key]["status"] for v in verdicts]
    if not states:
        return "undetermined"
    if all(s == "met" for s in states):
        return "met"
    if any(s == "not_met" for s in states):
        return "not_met"
    return "undetermined"


# ---------------------------------------------------------------------------------------------
# Tuning: choices made on the tuning split only


def rank_candidate(frontiers_by_trace: Mapping[str, Mapping[str, Any]]) -> tuple[int, float, float]:
    """Sort key of one secondary-knob value from its tuning frontiers (one per tuning trace):
    most traces reaching the goal, then the least total GPU-hours at the goal over those, then the
    highest worst-trace attainment."""
    reached = [f["at_goal"] for f in frontiers_by_trace.values() if f["at_goal"]["reached"]]
    total = sum(a["gpu_hours"]["mean"] for a in reached)
    worst = min((max(p["attainment"]["mean"] for p in f["points"]) for f in frontiers_by_trace.values()),
                default=0.0)
    return (-len(reached), total, -worst)


def choose_secondary(candidates: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """`candidates`: secondary value (as a string key) -> tuning trace -> frontier_summary. The
    chosen value and every candidate's score."""
    scored = {c: rank_candidate(fr) for c, fr in candidates.items()}
    chosen = min(scored, key=lambda c: scored[c]) if scored else None
    return {"chosen": chosen, "scores": {c: {"traces_reaching_goal": -s[0], "gpu_hours_at_goal_total": s[1],
                                             "worst_max_attainment": -s[2]} for c, s in scored.items()}}


def default_u(frontiers_by_trace: Mapping[str, Mapping[str, Any]], goal: float = GOAL) -> dict[str, Any]:
    """The utilisation target a user would set from the tuning split: the highest one whose mean
    attainment reaches the goal on every tuning trace (else the lowest tried)."""
    us = sorted({p["u"] for f in frontiers_by_trace.values() for p in f["points"]})
    ok = [u for u in us if all(any(p["u"] == u and p["attainment"]["mean"] >= goal for p in f["points"])
                               for f in frontiers_by_trace.values())]
    if ok:
        return {"u": max(ok), "reaches_goal": True}
    return {"u": min(us) if us else None, "reaches_goal": False}
