"""Quota benchmark (issue 18): eight ServeGen clients as services in three tiers share a GPU quota at
70 % of their combined peak; gpufleet's arbitration against independent HPAs with static shares.

    python benchmarks/quota_bench.py                      # the full run: 8 services, one day
    python benchmarks/quota_bench.py --quick --out /tmp/q  # 3 services, 2 hours (the unit test's)

Services: the eight busiest clients of ServeGen m-small (by mean rate on the day) on an evaluation
day (day 11: the frontier benchmark tunes on days 1-10), each replayed at SCALE x its rate,
ranked by mean rate and dealt to the tiers in turn (premium, standard, free), so that every tier
holds a large and a small client. Windows where every client reads zero are a gap in the data
(day 11 has 11 of them), filled from the same window a day before or after. premium and standard are not preemptible (held at replicas.min
at worst); free is preemptible. Every service is the frontier benchmark's scenario for its trace
(sim.scenarios.make_scenario: TTFT target, load-test capacity per replica, replicas.min 1), warm
cold starts (coldstart "warm").

Quota: QUOTA_SHARE of the combined peak: the most GPUs the services hold together (per minute)
when each scales alone with gpufleet (the gpufleet-alone run), one GPU per replica.

Runs (each policy at its tuned default from reports/bench, "warm" cold start: gpufleet u=0.6 with
no warm pool, the HPA u=0.3; the HPA at gpufleet's u=0.6 too):
- gpufleet-quota: every service's gpufleet policy wrapped in the operator's QuotaPolicy, the
  operator's arbitration (core.quota.arbitrate) over all services each interval, in lockstep;
- hpa-static-u*: one HPA per service, maxReplicas = its static share of the quota, in proportion to
  its own peak load (the best static split one can make without knowing when peaks coincide);
- gpufleet-alone: every service by itself without a quota (what the quota takes away).

Writes OUT/results.json (every figure and the verdicts, as data), OUT/README.md and OUT/quota.png.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "operator"))

from gpufleet.api.quota import GPUQuotaSpec, QuotaTier  # noqa: E402
from gpufleet.control.ports import Policy  # noqa: E402
from gpufleet.api.models import InferenceServiceSpec  # noqa: E402
from gpufleet.sim import multiservice as M  # noqa: E402
from gpufleet.sim.engine import SimResult  # noqa: E402
from gpufleet.sim.scenarios import cold_setting, make_scenario  # noqa: E402
from gpufleet.sim.traces import SHARED_TRACES, from_window_rates  # noqa: E402
from gpufleet.sim.traces import _fill_missing_windows as fill_missing_windows  # noqa: E402

sys.path.insert(0, HERE)
from frontier import git_rev  # noqa: E402  (the benchmarks' one commit stamp)

GPU = "nvidia.com/gpu"
TIERS = (("premium", False), ("standard", False), ("free", True))
SCALE = 0.1  # a tenth of each client's traffic (the frontier benchmark replays ServeGen at 0.1 too)
QUOTA_SHARE = 0.7
DAY_INDEX = 10  # day 11 (0-based 10)
GOAL = 0.999
KNOBS = {"gpufleet": {"u": 0.6, "pool": 0}, "hpa": {"u": 0.3}}  # reports/bench tuned defaults, warm
HPA_U = (0.3, 0.6)
WINDOW_S = 600


def client_rates(folder: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Each client's rate per window, and the windows where every client reads zero: a gap in the
    data, not a pause in the load (shared/traces/README.md); those are filled from the same window
    a day earlier or later, as sim.traces does for the summed clients."""
    raw = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.csv"))):
        data = np.genfromtxt(path, delimiter=",", usecols=(0, 1))
        idx = (data[:, 0] // WINDOW_S).astype(int)
        rate = np.zeros(idx.max() + 1)
        np.add.at(rate, idx, data[:, 1])
        raw[os.path.basename(path).removesuffix("-trace.csv")] = rate
    n = max(r.size for r in raw.values())
    full = {k: np.pad(r, (0, n - r.size)) for k, r in raw.items()}
    missing = sum(full.values()) <= 0
    per_day = 86400 // WINDOW_S
    return {k: fill_missing_windows(r, missing, per_day) for k, r in full.items()}, missing


def services(n: int, hours: float, seed: int) -> list[M.Service]:
    rates, missing = client_rates(os.path.join(SHARED_TRACES, "servegen", "language", "m-small"))
    per_day = 86400 // WINDOW_S
    lo = DAY_INDEX * per_day
    hi = lo + max(1, math.ceil(hours * 3600 / WINDOW_S))
    day = {k: r[lo:hi] for k, r in rates.items() if r.size >= hi}
    busiest = sorted(day, key=lambda k: (-float(day[k].mean()), k))[:n]
    out = []
    for rank, name in enumerate(busiest):
        tier = TIERS[rank % len(TIERS)][0]
        tr = from_window_rates(f"m-small/{name}", day[name], scale=SCALE, seed=seed + rank, missing_w=missing[lo:hi],
                               notes=(f"ServeGen m-small {name} (Alibaba Model Studio, arXiv 2505.09999, Apache-2.0), "
                                      f"day {DAY_INDEX + 1}, x{SCALE:g}",))
        sc = make_scenario(name, tr, seed=seed + rank, cold=cold_setting("warm"), warm_pool=0)
        out.append(M.Service(name, tier, sc))
    return out


def gpufleet(s: M.Service) -> tuple[Policy, InferenceServiceSpec]:
    return s.scenario.with_knobs("gpufleet", KNOBS["gpufleet"])


def hpa(u: float) -> Any:
    def make(s: M.Service) -> tuple[Policy, InferenceServiceSpec]:
        return s.scenario.with_knobs("hpa", {"u": u})
    return make


def run_rows(svcs: Sequence[M.Service], results: Mapping[str, SimResult], quota_gpus: int) -> dict[str, Any]:
    tiers = [t for t, _ in TIERS]
    gpus = M.gpus_over_time(svcs, results)
    return {
        "tiers": {t.tier: {"services": list(t.services), "attainment": t.attainment, "arrived": t.arrived,
                           "gpu_hours": t.gpu_hours} for t in M.by_tier(svcs, results, tiers)},
        "services": {s.name: {"tier": s.tier, "attainment": results[s.name].attainment,
                              "gpu_hours": results[s.name].gpu_hours, "arrived": results[s.name].arrived,
                              "ttft_p99_ms": results[s.name].ttft_p99_ms} for s in svcs},
        "gpu_hours": float(sum(r.gpu_hours for r in results.values())),
        "attainment": float(sum(r.met_slo for r in results.values()) / max(sum(r.arrived for r in results.values()), 1e-9)),
        "peak_gpus": float(gpus.max()) if gpus.size else 0.0,
        "minutes_over_quota": int((gpus > quota_gpus + 1e-9).sum()),
        "gpus_per_minute": [float(x) for x in gpus],
    }


def verdicts(runs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    top = TIERS[0][0]
    ours = runs["gpufleet-quota"]["tiers"][top]["attainment"]
    hpas = {k: v["tiers"][top]["attainment"] for k, v in runs.items() if k.startswith("hpa-static")}
    alone = runs["gpufleet-alone"]["tiers"][top]["attainment"]
    worst = runs["gpufleet-quota"]["tiers"][top].get("attainment_range", {}).get("min", ours)
    return {
        "goal": f"top tier ({top}) attainment >= {GOAL:.1%} under the quota",
        "top_tier_attainment": ours,
        "met": bool(ours >= GOAL),
        "top_tier_alone_attainment": alone,
        "top_tier_quota_cost_pp": 100 * (alone - ours),  # what the quota took from the top tier
        "alone_met": bool(alone >= GOAL),
        "top_tier_worst_seed": worst,
        "hpa_static_top_tier_attainment": hpas,
        "hpa_static_met": {k: bool(v >= GOAL) for k, v in hpas.items()},
        "within_quota": runs["gpufleet-quota"]["minutes_over_quota"] == 0,
    }


def render(res: Mapping[str, Any]) -> str:
    q = res["quota"]
    lines = [
        "# Shared GPU quota: gpufleet's tiered arbitration against independent HPAs",
        "",
        f"Generated by `{res['command']}` (commit {res['commit']}, {res['wall_s']:.0f} s). Every figure below is",
        "read from `results.json`; see `benchmarks/quota_bench.py` for the set-up. Seeds "
        + ", ".join(str(s) for s in res["seeds"]) + " (arrivals drawn from the rates, simulator draws): "
        "figures are means over seeds, [min–max] where there are several; peak GPUs the most of any seed, "
        "minutes over the quota summed.",
        "",
        f"- Services: {len(res['services'])} ServeGen m-small clients, day {DAY_INDEX + 1}, x{SCALE:g} of each client's "
        f"rate, {res['hours']:g} h, tiers " + ", ".join(f"{t} ({'preemptible' if p else 'not preemptible'})"
                                                         for t, p in TIERS) + ".",
        f"- Quota (seed {res['seeds'][0]}; by seed: {', '.join(str(g) for g in q['gpus_by_seed'])}): "
        f"{q['gpus']} GPUs = {QUOTA_SHARE:.0%} of the combined peak ({q['combined_peak_gpus']:.0f} GPUs: the "
        "most the services hold together, per minute, when each scales alone with gpufleet); the load itself peaks at "
        f"{q['combined_peak_load_gpus']:.1f} replicas' load-test capacity, summed over services per minute.",
        f"- HPA static shares (maxReplicas, in proportion to each service's peak): "
        + ", ".join(f"{k} {v}" for k, v in q["static_shares"].items()) + ".",
        "",
        "| run | " + " | ".join(f"{t} attainment %" for t, _ in TIERS) + " | all % | GPU-h | peak GPUs | minutes over quota |",
        "|---|" + "---|" * (len(TIERS) + 4),
    ]
    def cell(tier: Mapping[str, Any]) -> str:
        rng = tier.get("attainment_range")
        if rng and len(res["seeds"]) > 1:
            return f"{100 * tier['attainment']:.3f} [{100 * rng['min']:.3f}–{100 * rng['max']:.3f}]"
        return f"{100 * tier['attainment']:.3f}"

    for name, run in res["runs"].items():
        cells = [cell(run["tiers"][t]) for t, _ in TIERS]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {100 * run['attainment']:.3f} | {run['gpu_hours']:.1f} | "
                     f"{run['peak_gpus']:.0f} | {run['minutes_over_quota'] if name != 'gpufleet-alone' else '–'} |")
    v = res["verdicts"]
    lines += [
        "",
        "## Verdict",
        "",
        f"- Goal: {v['goal']}: gpufleet-quota {100 * v['top_tier_attainment']:.3f} % -> "
        f"**{'met' if v['met'] else 'not met'}**. The same services each scaled alone without a quota "
        f"(gpufleet-alone) give the top tier {100 * v['top_tier_alone_attainment']:.3f} % "
        f"({'meets' if v['alone_met'] else 'misses'} the goal too): the quota costs it "
        f"{v['top_tier_quota_cost_pp']:+.3f} percentage points.",
        "- Independent HPAs with static shares give the top tier: "
        + "; ".join(f"{k} {100 * a:.3f} % ({'met' if v['hpa_static_met'][k] else 'not met'})"
                    for k, a in v["hpa_static_top_tier_attainment"].items()) + ".",
        f"- Worst seed, top tier under the quota: {100 * v['top_tier_worst_seed']:.3f} %.",
        f"- gpufleet-quota held at most {res['runs']['gpufleet-quota']['peak_gpus']:.0f} GPUs (quotas by seed "
        f"{', '.join(str(g) for g in q['gpus_by_seed'])}); minutes over its seed's quota, summed: "
        f"{res['runs']['gpufleet-quota']['minutes_over_quota']} (every pod counts, starting and draining ones "
        "included, sampled each minute).",
        "",
        "## Per service",
        "",
        "| service | tier | " + " | ".join(f"{k} %" for k in res["runs"]) + " |",
        "|---|---|" + "---|" * len(res["runs"]),
    ]
    for s in res["services"]:
        lines.append(f"| {s['name']} | {s['tier']} | " + " | ".join(
            f"{100 * run['services'][s['name']]['attainment']:.3f}" for run in res["runs"].values()) + " |")
    lines += [
        "",
        "## How to read it",
        "",
        "Attainment is the share of requests whose time to first token met the service's target (requests",
        "rejected or lost count as misses), summed over a tier's services. The quota binds only when the",
        "services' peaks coincide; the HPAs' static shares cannot move capacity from a service at its trough",
        "to one at its peak, and an HPA at its maxReplicas queues. gpufleet's arbitration moves it, at the",
        "lower tiers' expense: the free tier is preemptible and is cut first.",
        "",
        "Limits of this run: one day, one seed, a simulated fleet (sim/engine.py: pooled replicas, 1 s fluid",
        "model); the lockstep arbitration sees the needs of the same tick, the operator's may be one quota",
        "interval older.",
        "",
        "![GPUs over time](quota.png)",
        "",
    ]
    return "\n".join(lines)


DOCS = os.path.join(ROOT, "docs", "quotas.md")
DOCS_START, DOCS_END = "<!-- quota-bench:start -->", "<!-- quota-bench:end -->"


def docs_block(res: Mapping[str, Any]) -> str:
    """The figures docs/quotas.md shows, rendered from results.json (a test checks they agree)."""
    v, q = res["verdicts"], res["quota"]
    lines = [DOCS_START,
             f"Means over seeds {', '.join(str(s) for s in res['seeds'])}; quota {q['gpus']} GPUs (seed "
             f"{res['seeds'][0]}), {res['hours']:g} h per service.",
             "",
             "| run | " + " | ".join(f"{t} %" for t, _ in TIERS) + " | GPU-h | peak GPUs |",
             "|---|" + "---|" * (len(TIERS) + 2)]
    for name, run in res["runs"].items():
        lines.append(f"| {name} | " + " | ".join(f"{100 * run['tiers'][t]['attainment']:.3f}" for t, _ in TIERS)
                     + f" | {run['gpu_hours']:.0f} | {run['peak_gpus']:.0f} |")
    hpas = "; ".join(f"{k} {100 * a:.3f} %" for k, a in v["hpa_static_top_tier_attainment"].items())
    lines += ["",
              f"The goal ({v['goal']}) is **{'met' if v['met'] else 'not met'}**: "
              f"{100 * v['top_tier_attainment']:.3f} % under the quota, {100 * v['top_tier_alone_attainment']:.3f} % "
              f"for the same services scaled alone without one (the quota costs the top tier "
              f"{v['top_tier_quota_cost_pp']:+.3f} points). Independent HPAs with static shares give it: {hpas}.",
              DOCS_END]
    return "\n".join(lines)


def write_docs(res: Mapping[str, Any], path: str = DOCS) -> None:
    with open(path) as f:
        text = f.read()
    head, _, rest = text.partition(DOCS_START)
    _, _, tail = rest.partition(DOCS_END)
    with open(path, "w") as f:
        f.write(head + docs_block(res) + tail)


def plot(res: Mapping[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4))
    for name, run in res["runs"].items():
        g = np.asarray(run["gpus_per_minute"])
        ax.plot(np.arange(g.size) / 60.0, g, label=name, lw=1)
    ax.axhline(res["quota"]["gpus"], color="k", ls="--", lw=1, label="quota")
    ax.set_xlabel("hour of the day")
    ax.set_ylabel("GPUs held (all services)")
    ax.legend(fontsize=8)
    ax.set_title("GPUs held against the shared quota")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def one_seed(n: int, hours: float, seed: int) -> dict[str, Any]:
    """Every run for one seed (the arrivals drawn from the rates, and the simulator's draws)."""
    svcs = services(n, hours, seed)
    runs: dict[str, dict[str, SimResult]] = {}
    # The combined peak: the most GPUs the services hold together when each scales alone.
    runs["gpufleet-alone"] = M.run_independent(svcs, gpufleet, forecast=True)
    combined = float(M.gpus_over_time(svcs, runs["gpufleet-alone"]).max())
    quota_gpus = max(sum(s.scenario.spec.replicas.min for s in svcs), math.floor(QUOTA_SHARE * combined))
    quota = GPUQuotaSpec(limits={GPU: quota_gpus}, tiers=[QuotaTier(name=t, preemptible=p) for t, p in TIERS])
    shares = M.static_shares(svcs, quota_gpus)
    print(f"seed {seed}: {n} services, {hours:g} h, quota {quota_gpus} GPUs (combined peak {combined:.1f})", flush=True)
    runs["gpufleet-quota"], _ = M.run_quota(svcs, quota, gpufleet)
    for u in HPA_U:
        runs[f"hpa-static-u{u:g}"] = M.run_independent(svcs, hpa(u), shares)
    return {
        "seed": seed,
        "services": [{"name": s.name, "tier": s.tier, "rps_per_replica": s.scenario.rps_per_replica,
                      "mean_rps": float(s.scenario.trace.counts.mean()),
                      "peak_need_replicas": float(np.max(M.peak_need(s.scenario)))} for s in svcs],
        "quota": {"gpus": quota_gpus, "share": QUOTA_SHARE, "combined_peak_gpus": combined,
                  "combined_peak_load_gpus": M.combined_peak_gpus(svcs), "static_shares": shares},
        "runs": {k: run_rows(svcs, v, quota_gpus) for k, v in runs.items()},
    }


def aggregate(per_seed: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean over seeds of each run's figures, with the range; the first seed's time series."""
    out: dict[str, Any] = {}
    for name, first in per_seed[0]["runs"].items():
        rows = [p["runs"][name] for p in per_seed]

        def stats(get: Any) -> dict[str, float]:
            vals = [float(get(r)) for r in rows]
            return {"mean": float(np.mean(vals)), "min": min(vals), "max": max(vals)}

        out[name] = {
            "tiers": {t: {"attainment": stats(lambda r, t=t: r["tiers"][t]["attainment"])["mean"],
                          "attainment_range": stats(lambda r, t=t: r["tiers"][t]["attainment"]),
                          "gpu_hours": stats(lambda r, t=t: r["tiers"][t]["gpu_hours"])["mean"],
                          "services": first["tiers"][t]["services"]} for t in first["tiers"]},
            "services": {s: {"tier": v["tier"],
                             "attainment": stats(lambda r, s=s: r["services"][s]["attainment"])["mean"],
                             "gpu_hours": stats(lambda r, s=s: r["services"][s]["gpu_hours"])["mean"]}
                         for s, v in first["services"].items()},
            "attainment": stats(lambda r: r["attainment"])["mean"],
            "gpu_hours": stats(lambda r: r["gpu_hours"])["mean"],
            "peak_gpus": stats(lambda r: r["peak_gpus"])["max"],
            "minutes_over_quota": int(sum(r["minutes_over_quota"] for r in rows)),
            "gpus_per_minute": first["gpus_per_minute"],
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 services, 2 hours, one seed")
    ap.add_argument("--services", type=int, default=None)
    ap.add_argument("--hours", type=float, default=None)
    ap.add_argument("--seeds", default=None, help="comma-separated (default 0,1,2; --quick: 0)")
    ap.add_argument("--workers", type=int, default=min(3, os.cpu_count() or 1))
    ap.add_argument("--out", default=os.path.join(ROOT, "reports", "quota"))
    ap.add_argument("--docs", action="store_true", help="also write the figures into docs/quotas.md")
    ap.add_argument("--render-only", action="store_true",
                    help="re-render OUT/README.md, OUT/quota.png and docs/quotas.md from OUT/results.json")
    args = ap.parse_args(argv)
    if args.render_only:
        with open(os.path.join(args.out, "results.json")) as f:
            stored = json.load(f)
        with open(os.path.join(args.out, "README.md"), "w") as f:
            f.write(render(stored))
        plot(stored, os.path.join(args.out, "quota.png"))
        write_docs(stored)
        return 0
    n = args.services or (3 if args.quick else 8)
    hours = args.hours or (2.0 if args.quick else 24.0)
    seeds = [int(x) for x in (args.seeds or ("0" if args.quick else "0,1,2")).split(",")]
    t0 = time.perf_counter()
    if len(seeds) == 1 or args.workers <= 1:
        per_seed = [one_seed(n, hours, s) for s in seeds]
    else:
        with ProcessPoolExecutor(max_workers=min(args.workers, len(seeds))) as pool:
            per_seed = list(pool.map(one_seed, [n] * len(seeds), [hours] * len(seeds), seeds))
    rows = aggregate(per_seed)
    first = per_seed[0]
    res: dict[str, Any] = {
        "schema": 1,
        "command": "python benchmarks/quota_bench.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip(),
        "commit": git_rev(),
        "hours": hours,
        "seeds": seeds,
        "services": first["services"],
        "tiers": [{"name": t, "preemptible": p} for t, p in TIERS],
        "quota": {**first["quota"], "gpus_by_seed": [p["quota"]["gpus"] for p in per_seed]},
        "knobs": {"gpufleet": KNOBS["gpufleet"], "hpa_u": list(HPA_U)},
        "runs": rows,
        "verdicts": verdicts(rows),
        "per_seed": [{**p, "runs": {k: {kk: vv for kk, vv in v.items() if kk != "gpus_per_minute"}
                                    for k, v in p["runs"].items()}} for p in per_seed],
        "wall_s": time.perf_counter() - t0,
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(res, f, indent=1)
    with open(os.path.join(args.out, "README.md"), "w") as f:
        f.write(render(res))
    plot(res, os.path.join(args.out, "quota.png"))
    if args.docs:
        write_docs(res)
    print(json.dumps({k: {t: round(100 * v["tiers"][t]["attainment"], 3) for t, _ in TIERS} | {
        "gpu_h": round(v["gpu_hours"], 1)} for k, v in rows.items()}, indent=1))
    print(json.dumps(res["verdicts"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
