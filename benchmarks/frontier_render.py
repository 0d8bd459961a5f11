"""Render the frontier benchmark's results.json: the report (README.md), the plots, and the
numbers block of the repository's README.md. Every figure and every verdict comes from
results.json; nothing here decides anything (statuses and reasons are data, rendered as words).

    python benchmarks/frontier_render.py reports/bench [--readme README.md]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections.abc import Mapping
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import frontier_stats as S  # noqa: E402

BEGIN = "<!-- frontier:begin"
END = "<!-- frontier:end -->"
STATUS = {"met": "**met**", "not_met": "**not met**", "undetermined": "undetermined"}
REASONS = {
    "gpufleet_below_goal": "gpufleet's frontier does not reach 99.9 % on every seed",
    "gpufleet_not_run": "gpufleet not run",
    "no_baseline_reaches_goal": "no baseline's frontier reaches 99.9 % on every seed (its knob range ends short of it)",
    "no_common_seeds": "no seed in common",
    "baseline_above_goal_at_every_knob": "the best baseline is above 99.9 % at every knob value (its GPU-h at the goal is an upper bound)",
    "gpufleet_above_goal_at_every_knob": "gpufleet is above 99.9 % at every knob value (its GPU-h at the goal is an upper bound)",
    "ratio_above_goal": "ratio above the goal",
    "lower_bound_missing": "lower bound missing",
}
NINES_TOP = 5.0  # the plots' top: 99.999 % (higher attainment is drawn there, its value in the legend)
POLICY_STYLE = {"hpa": ("tab:blue", "o"), "keda": ("tab:green", "s"), "knative-kpa": ("tab:purple", "^"),
                "gpufleet": ("tab:red", "D")}


# ---------------------------------------------------------------------------------------------
# Formatting


def num(v: float | None, digits: int = 0) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:,.{digits}f}"


def ci(ti: Mapping[str, Any] | None, digits: int = 0, scale: float = 1.0) -> str:
    """"mean [lo–hi]" of a t_interval; the mean alone with one seed."""
    if not ti or ti.get("mean") is None:
        return "–"
    m, lo, hi = ti["mean"] * scale, ti["lo"] * scale, ti["hi"] * scale
    if ti.get("n", 0) <= 1:
        return num(m, digits)
    return f"{num(m, digits)} [{num(lo, digits)}–{num(hi, digits)}]"


def gh_digits(v: float | None) -> int:
    return 0 if v is not None and abs(v) >= 100 else 1 if v is not None and abs(v) >= 10 else 2


def at_goal_text(fr: Mapping[str, Any] | None) -> str:
    if fr is None:
        return "–"
    a = fr["at_goal"]
    if not a["reached"]:
        top = max((p["attainment"]["mean"] for p in fr["points"]), default=None)
        return f"not reached (best {num(top * 100 if top is not None else None, 3)} %)"
    g = a["gpu_hours"]
    text = ci(g, gh_digits(g["mean"]))
    return ("≤ " + text) if a["bound"] == "upper" else text


def lb_ratio_text(r: Mapping[str, Any] | None, fr: Mapping[str, Any] | None) -> str:
    """A policy's ratio to the lower bound; "≤" where its GPU-h at the goal are an upper bound."""
    if not r:
        return "–"
    upper = fr is not None and fr["at_goal"]["bound"] == "upper"
    return ("≤ " if upper else "") + ci(r, 2) + "×"


def below_bound_text(results: Mapping[str, Any]) -> str:
    """Where a policy reached 99.9 % below the lower bound (the bound is then not strict there)."""
    below = [f"{p} on {trace} ({cold}, seed{'s' if len(seeds) > 1 else ''} {', '.join(seeds)})"
             for cold, trace in cells(results) for p, seeds in results["verdicts"][cold][trace]["below_bound"].items()]
    if not below:
        return ""
    return ("**The lower bound is not strict everywhere**: at 99.9 %, below it: " + "; ".join(below)
            + " (see the lower bound's definition in the report's Method).")


def common_text(v: Mapping[str, Any]) -> str:
    """The comparison at the highest attainment every frontier reaches, where that is below the goal."""
    c = v.get("at_common")
    if not c or c["attainment"] >= S.GOAL or c["ratio"] is None:
        return ""
    upper = c["bounds"].get(S.GPUFLEET) == "upper"
    return (f" At {c['attainment'] * 100:.2f} %, the highest attainment every frontier reaches on every seed: "
            f"gpufleet {('≤ ' if upper else '')}{ci(c['ratio'], 2)}× the best baseline ({c['best_baseline']}).")


def reasons(v: Mapping[str, Any]) -> str:
    return "; ".join(REASONS.get(r, r) for r in v["reasons"])


def verdict_cell(v: Mapping[str, Any], goal: float) -> str:
    r = v["ratio"]
    text = (ci(r, 2) + "×") if r else "–"
    st = STATUS[v["status"]]
    why = reasons(v)
    return f"{text} (goal ≤ {goal:g}×): {st}" + (f" — {why}" if why and v["status"] != "met" else "")


def cells(results: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(cold setting, eval trace) in the grid's order."""
    return [(c, t) for c in results["grid"]["colds"] for t in results["grid"]["eval_traces"]]


def policies(results: Mapping[str, Any], by_policy: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The entries of `by_policy` in the grid's policy order."""
    return [(p, by_policy[p]) for p in results["grid"]["policies"] if p in by_policy]


# ---------------------------------------------------------------------------------------------
# The README block


def verdict_table(results: Mapping[str, Any]) -> list[str]:
    """The verdict table (README block and report): one row per cold setting and held-out trace."""
    rows = ["| cold start | trace | gpufleet | best baseline | gpufleet / best baseline | lower bound | gpufleet / lower bound |",
            "|---|---|---|---|---|---|---|"]
    for cold, trace in cells(results):
        v = results["verdicts"][cold][trace]
        fr = results["frontiers"][cold][trace]
        best = v["best_baseline"]
        lb = results["lower_bounds"][trace]["gpu_hours"]
        rows.append("| " + " | ".join([
            cold, trace, at_goal_text(fr.get(S.GPUFLEET)),
            f"{best}: {at_goal_text(fr[best])}" if best else "none reaches 99.9 %",
            verdict_cell(v["vs_baseline"], v["ratio_goal"]), ci(lb, gh_digits(lb["mean"])),
            verdict_cell(v["vs_lower_bound"], v["lb_goal"])]) + " |")
    return rows


def render_readme_block(results: Mapping[str, Any], report_dir: str = "reports/bench") -> str:
    """The numbers block of the repository's README, from results.json alone."""
    g = results["grid"]
    t = results["timing"]
    lines = [f"{BEGIN} generated by benchmarks/frontier_render.py from {report_dir}/results.json; do not edit -->",
             f"Frontier benchmark (grid `{g['name']}`: {len(g['colds'])} cold-start settings × "
             f"{len(g['eval_traces'])} held-out traces × {len(g['u'])} utilisation targets × {len(g['seeds'])} seeds; "
             f"{t['runs_done']} of {t['runs']} runs, {num(t['core_s'] / 3600, 1)} core-hours; "
             f"[report]({report_dir}/README.md), [findings]({report_dir}/FINDINGS.md)). GPU-hours at 99.9 % "
             "attainment along each policy's frontier, mean [95 % t-interval over seeds]:",
             "",
             *verdict_table(results)]
    lines.append("")
    over = "; ".join(f"{cold} (goal ≤ {s['ratio_goal']:g}× the best baseline): {STATUS[s['vs_baseline']]}, "
                     f"vs the lower bound: {STATUS[s['vs_lower_bound']]}"
                     for cold in results["grid"]["colds"] for s in [results["summary"][cold]])
    for cold, trace in cells(results):
        text = common_text(results["verdicts"][cold][trace])
        if text:
            lines.append(f"- {trace}, {cold}:{text}")
    lines.append("")
    lines.append(f"Overall, on every held-out trace: {over}.")
    below = below_bound_text(results)
    if below:
        lines += ["", below]
    per = t["per_policy"]
    lines.append("")
    lines.append("One 14-day run (seconds per simulated day × 14, mean over the runs, slowest in brackets; the issue "
                 "asks ≤ 60 s): " + ", ".join(f"{p} {num(per[p]['s_per_sim_day_mean'] * 14)} s ({num(per[p]['per_14d_max_s'])} s)"
                                              for p in g["policies"] if p in per) + ".")
    lines.append(END)
    return "\n".join(lines)


F_BEGIN = "<!-- findings:begin"
F_END = "<!-- findings:end -->"


def render_findings_block(results: Mapping[str, Any]) -> str:
    """FINDINGS.md's figures, from results.json alone: per cold setting and held-out trace, every
    policy's GPU-hours at 99.9 % and its ratio to the lower bound, the tuned defaults on held-out
    data, and what the tuning split chose (with every candidate's score)."""
    g = results["grid"]
    t = results["timing"]
    L = [f"{F_BEGIN} generated by benchmarks/frontier_render.py from results.json; do not edit -->",
         f"Grid `{g['name']}` (rendered at code {results['rev']}): {t['runs_done']} runs, seeds {', '.join(map(str, g['seeds']))} "
         f"(tuning: {', '.join(map(str, g['tune_seeds']))}), utilisation targets "
         f"{', '.join(f'{u:g}' for u in g['u'])}. Mean [95 % t-interval over seeds].", ""]
    for cold, trace in cells(results):
        v = results["verdicts"][cold][trace]
        frs = results["frontiers"][cold][trace]
        tp = results["tuned_points"][cold][trace]
        lb = results["lower_bounds"][trace]["gpu_hours"]
        cl = results["clairvoyant"].get(trace, {})
        L += [f"**{trace}, cold start {cold}** — lower bound {ci(lb, gh_digits(lb['mean']))} GPU-h; clairvoyant-5s "
              f"{ci(cl.get('gpu_hours'), gh_digits((cl.get('gpu_hours') or {}).get('mean')))} GPU-h at "
              f"{ci(cl.get('attainment'), 3, 100)} %.", "",
              "| policy | knobs | GPU-h at 99.9 % | / lower bound | at its tuned u: u, attainment %, GPU-h, GPU-h not serving, requests dropped |",
              "|---|---|---|---|---|"]
        for p, fr in policies(results, frs):
            r = v["policies_vs_lower_bound"].get(p)
            knobs = ", ".join(f"{k}={x}" for k, x in fr["knobs"].items()) or "–"
            x = tp.get(p)
            tuned = (f"{x['u']:g}, {ci(x['attainment'], 3, 100)}, {ci(x['gpu_hours'], gh_digits(x['gpu_hours']['mean']))}"
                     if x else "–")
            if x and (x.get("not_serving_share") or {}).get("mean") is not None:
                tuned += f", {ci(x['not_serving_share'], 1, 100)} % not serving"
            if x and (x.get("dropped_share") or {}).get("mean") is not None:
                tuned += f", {ci(x['dropped_share'], 3, 100)} % dropped"
            L.append(f"| {p} | {knobs} | {at_goal_text(fr)} | {lb_ratio_text(r, fr)} | {tuned} |")
        L += ["", f"gpufleet / best baseline ({v['best_baseline'] or 'none'}): "
              + verdict_cell(v["vs_baseline"], v["ratio_goal"]) + "; gpufleet / lower bound: "
              + verdict_cell(v["vs_lower_bound"], v["lb_goal"]) + "." + common_text(v), ""]
    L += ["Chosen on the tuning split (candidates: tuning traces reaching 99.9 %, GPU-h at 99.9 % summed over them):", ""]
    for cold in g["colds"]:
        for p in g["policies"]:
            v = results["tuning"][cold][p]
            sc = v["secondary"]["scores"]
            if not sc:
                continue
            cands = "; ".join(f"{', '.join(f'{k}={x}' for k, x in json.loads(c).items())}: {s['traces_reaching_goal']}, "
                              f"{num(s['gpu_hours_at_goal_total'])}" for c, s in sc.items())
            chosen = ", ".join(f"{k}={x}" for k, x in v["chosen"].items())
            L.append(f"- {cold}, {p}: {chosen} ({cands}); default u {v['default_u']['u']}"
                     f"{'' if v['default_u']['reaches_goal'] else ' (none reaches 99.9 %)'}.")
    L.append(F_END)
    return "\n".join(L)


def _replace_block(path: str, begin: str, end: str, block: str) -> None:
    with open(path) as fh:
        text = fh.read()
    pat = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if not pat.search(text):
        raise SystemExit(f"{path}: no '{begin} ... {end}' block to replace")
    with open(path, "w") as fh:
        fh.write(pat.sub(lambda _: block, text))


def update_readme(path: str, results: Mapping[str, Any], report_dir: str) -> None:
    _replace_block(path, BEGIN, END, render_readme_block(results, report_dir))


def update_findings(path: str, results: Mapping[str, Any]) -> None:
    """Rewrite FINDINGS.md's figures block (if the file has one)."""
    if os.path.exists(path) and block_in(open(path).read(), F_BEGIN, F_END) is not None:
        _replace_block(path, F_BEGIN, F_END, render_findings_block(results))


def block_in(text: str, begin: str, end: str) -> str | None:
    m = re.search(re.escape(begin) + r".*?" + re.escape(end), text, re.S)
    return m.group(0) if m else None


def readme_block(text: str) -> str | None:
    """The block as it stands in a README's text."""
    return block_in(text, BEGIN, END)


# ---------------------------------------------------------------------------------------------
# Plots


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", s).strip("-")


def plot_frontiers(title: str, frontiers: Mapping[str, Any], path: str, *, lower_bound: Mapping[str, Any] | None = None,
                   clairvoyant: Mapping[str, Any] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    ys: list[float] = [3.0]
    for policy, fr in frontiers.items():
        color, marker = POLICY_STYLE.get(policy, ("0.3", "x"))
        pts = fr["points"]
        if not pts:
            continue
        x = [p["gpu_hours"]["mean"] for p in pts]
        y = [min(S.nines(p["attainment"]["mean"]), NINES_TOP) for p in pts]
        xerr = [[p["gpu_hours"]["mean"] - p["gpu_hours"]["lo"] for p in pts],
                [p["gpu_hours"]["hi"] - p["gpu_hours"]["mean"] for p in pts]]
        yerr = [[max(0.0, y[i] - min(S.nines(min(p["attainment"]["lo"], p["attainment"]["mean"])), NINES_TOP))
                 for i, p in enumerate(pts)],
                [max(0.0, min(S.nines(max(p["attainment"]["hi"], p["attainment"]["mean"])), NINES_TOP) - y[i])
                 for i, p in enumerate(pts)]]
        ys += y
        knobs = ", ".join(f"{k}={v}" for k, v in fr.get("knobs", {}).items() if k != "u")
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, color=color, marker=marker, ms=4, lw=1, capsize=2,
                    label=policy + (f" ({knobs})" if knobs else ""))
        for xi, yi, p in zip(x, y, pts):
            ax.annotate(f"{p['u']:g}", (xi, yi), textcoords="offset points", xytext=(3, 3), fontsize=6, color=color)
    if lower_bound and lower_bound.get("mean") is not None:
        ax.axvline(lower_bound["mean"], color="k", ls="--", lw=1, label="lower bound")
        if lower_bound.get("n", 0) > 1:
            ax.axvspan(lower_bound["lo"], lower_bound["hi"], color="k", alpha=0.08)
    if clairvoyant and clairvoyant.get("gpu_hours", {}).get("mean") is not None:
        cy = S.nines(clairvoyant["attainment"]["mean"])
        ax.plot([clairvoyant["gpu_hours"]["mean"]], [min(cy, NINES_TOP)], "k*", ms=9,
                label="clairvoyant-5s" + (f" ({clairvoyant['attainment']['mean'] * 100:.4f} %)" if cy > NINES_TOP else ""))
    ax.axhline(S.nines(S.GOAL), color="0.5", lw=0.8, ls=":")
    ticks = [1, 2, 3, 4, 5]
    ax.set_yticks(ticks)
    ax.set_yticklabels(["90 %", "99 %", "99.9 %", "99.99 %", "99.999 %"])
    ax.set_ylim(max(0.0, min(ys) - 0.3), NINES_TOP + 0.2)
    ax.set_xlabel("GPU-hours (mean, 95 % t-interval over seeds)")
    ax.set_ylabel("SLO attainment")
    ax.set_title(title, fontsize=9, loc="left")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# The report


def write_report(results: Mapping[str, Any], out: str) -> list[str]:
    files = []
    for cold in results["grid"]["colds"]:
        for trace in results["grid"]["eval_traces"]:
            frs = dict(policies(results, results["frontiers"][cold][trace]))
            f = f"frontier-{_slug(cold)}-{_slug(trace)}.png"
            plot_frontiers(f"{trace}, cold start {cold} (evaluation split)", frs, os.path.join(out, f),
                           lower_bound=results["lower_bounds"][trace]["gpu_hours"],
                           clairvoyant=results["clairvoyant"].get(trace))
            files.append(f)
        for trace in results["grid"]["tune_traces"]:
            frs = {p: {**v["frontiers"][trace], "knobs": v["chosen"]}
                   for p, v in policies(results, results["tuning"][cold])}
            f = f"tuning-{_slug(cold)}-{_slug(trace)}.png"
            plot_frontiers(f"{trace}, cold start {cold} (tuning split, chosen knobs)", frs, os.path.join(out, f))
            files.append(f)
    with open(os.path.join(out, "README.md"), "w") as fh:
        fh.write(render_report(results))
    update_findings(os.path.join(out, "FINDINGS.md"), results)
    return files


def render_report(results: Mapping[str, Any]) -> str:
    g = results["grid"]
    t = results["timing"]
    L: list[str] = []
    sessions = t["sessions"]
    cores = sorted({s.get("cores") for s in sessions} - {None})
    workers = sorted({s.get("workers") for s in sessions} - {None})
    L += ["# Fleet simulator benchmark: frontiers", "",
          f"Generated from `results.json` by `benchmarks/frontier_render.py` (suite: `{results['command']}`, "
          f"rendered at code {results['rev']}; runs from code "
          f"{', '.join(sorted({str(s.get('rev')) for s in sessions})) or '?'}). Grid `{g['name']}`: {t['runs_done']} of {t['runs']} runs stored, "
          f"{num(t['core_s'] / 3600, 2)} core-hours of runs, {num(t['wall_s'] / 60, 1)} min wall over "
          f"{len(sessions)} session(s) on {'/'.join(map(str, cores)) or '?'} cores "
          f"({'/'.join(map(str, workers)) or '?'} worker processes). Numbers are simulated, not measured on GPUs. "
          "Analysis: [FINDINGS.md](FINDINGS.md). Spot: [spot/README.md](spot/README.md) and [SPOT.md](SPOT.md); "
          "the step and planned-event scenarios: [scenarios/README.md](scenarios/README.md).", ""]
    # Verdict
    L += ["## Verdict (evaluation split, at 99.9 % attainment)", "",
          "GPU-hours at 99.9 % along each frontier (mean [95 % t-interval over seeds]; ≤: every knob value was "
          "above 99.9 %, an upper bound). Ratios are paired by seed.", "",
          *verdict_table(results)]
    L.append("")
    for cold, trace in cells(results):
        text = common_text(results["verdicts"][cold][trace])
        if text:
            L.append(f"- {trace}, {cold}:{text}")
    L.append("")
    for cold in results["grid"]["colds"]:
        s = results["summary"][cold]
        L.append(f"- **{cold}**: vs the best baseline (goal ≤ {s['ratio_goal']:g}×) {STATUS[s['vs_baseline']]} "
                 f"(met on {len(s['traces_met'])}, not met on {len(s['traces_not_met'])} of "
                 f"{len(results['verdicts'][cold])} traces); vs the lower bound (≤ {results['goal']['ratio_vs_lower_bound']:g}×) "
                 f"{STATUS[s['vs_lower_bound']]}.")
    L.append("")
    # Every policy vs the lower bound
    below = below_bound_text(results)
    L += ["### Every policy against the lower bound", "",
          "GPU-hours at 99.9 % on the policy's frontier / the lower bound (per seed, then the interval). "
          + (below or "The bound held on every run: no policy reached 99.9 % below it."), "",
          "| cold start | trace | " + " | ".join(g["policies"]) + " |", "|---|---|" + "---|" * len(g["policies"])]
    for cold, trace in cells(results):
        v = results["verdicts"][cold][trace]
        row = []
        for p in g["policies"]:
            r = v["policies_vs_lower_bound"].get(p)
            row.append(lb_ratio_text(r, results["frontiers"][cold][trace].get(p)) if r else "not reached")
        L.append(f"| {cold} | {trace} | " + " | ".join(row) + " |")
    L.append("")
    # Split
    L += ["## Tuning and evaluation apart", "",
          "Knobs are chosen on the tuning split only; every figure above is from the evaluation split.", "",
          "- Tuning: " + ", ".join(f"`{x['trace']}` ({num(x['days'], 2)} d)" for x in results["split"]["tune"]) +
          f"; seeds {', '.join(map(str, g['tune_seeds']))}; utilisation targets {', '.join(f'{u:g}' for u in g['u_tune'])}.",
          "- Evaluation: " + ", ".join(f"`{x['trace']}` ({num(x['days'], 2)} d; {x['held_out']})"
                                       for x in results["split"]["eval"]) +
          f"; seeds {', '.join(map(str, g['seeds']))}; utilisation targets {', '.join(f'{u:g}' for u in g['u'])}.",
          "- Cold-start settings (`gpufleet/sim/coldstart.py`, creation to Ready, stages with the node): " + "; ".join(
              f"{c}: median {num(cs['fresh_node_median_s'])} s (p90 {num(cs['fresh_node_p90_s'])} s) on a new node, "
              f"{num(cs['free_node_median_s'])} s on a free one (kept {num(cs['consolidate_after_s'])} s after a "
              "scale-in); stage medians " + ", ".join(f"{k} {num(v)} s" for k, v in cs["stage_medians_s"].items() if v)
              for c, cs in results["cold_settings"].items()) + ".", "",
          "Chosen on the tuning split: each policy's secondary knob (the candidate whose frontier reaches 99.9 % on "
          "the most tuning traces, then the fewest GPU-hours there) and its default utilisation target (the highest "
          "whose mean attainment is ≥ 99.9 % on every tuning trace).", "",
          "| cold start | policy | chosen | candidates (traces reaching 99.9 %, GPU-h at 99.9 % summed) | default u |",
          "|---|---|---|---|---|"]
    for cold in g["colds"]:
        for p in g["policies"]:
            v = results["tuning"][cold][p]
            chosen = ", ".join(f"{k}={x}" for k, x in v["chosen"].items() if k != "u") or "–"
            cands = "; ".join(f"{', '.join(f'{k}={x}' for k, x in json.loads(c).items())}: {s['traces_reaching_goal']}, "
                              f"{num(s['gpu_hours_at_goal_total'])}" for c, s in v["secondary"]["scores"].items()) or "–"
            du = v["default_u"]
            L.append(f"| {cold} | {p} | {chosen} | {cands} | {num(du['u'], 3) if du['u'] is not None else '–'}"
                     f"{'' if du['reaches_goal'] else ' (none reaches 99.9 %: the lowest tried)'} |")
    L.append("")
    L += ["### The tuned defaults on held-out data", "",
          "Each policy at the knobs chosen on the tuning split, on the evaluation traces.", "",
          "| cold start | trace | policy | u | attainment % | GPU-h | ≥ 99.9 % |", "|---|---|---|---|---|---|---|"]
    for cold, trace in cells(results):
        for p, v in policies(results, results["tuned_points"][cold][trace]):
            L.append(f"| {cold} | {trace} | {p} | {v['u']:g} | {ci(v['attainment'], 3, 100)} | "
                     f"{ci(v['gpu_hours'], gh_digits(v['gpu_hours']['mean']))} | {'yes' if v['reaches_goal'] else 'no'} |")
    L.append("")
    # Frontiers
    L += ["## Frontiers", "",
          "One plot per trace and cold-start setting: mean GPU-hours and attainment per knob value (labelled by its "
          "utilisation target u) with 95 % t-intervals over seeds on both axes; the dashed line is the lower bound, "
          "the star the clairvoyant-5s policy.", ""]
    for cold, trace in cells(results):
        frs = dict(policies(results, results["frontiers"][cold][trace]))
        L += [f"### {trace}, cold start {cold}", "",
              f"![frontier-{_slug(cold)}-{_slug(trace)}.png](frontier-{_slug(cold)}-{_slug(trace)}.png)", "",
              "| policy | knobs | u | attainment % | GPU-h |", "|---|---|---|---|---|"]
        for p, fr in frs.items():
            knobs = ", ".join(f"{k}={x}" for k, x in fr["knobs"].items()) or "–"
            for pt in fr["points"]:
                L.append(f"| {p} | {knobs} | {pt['u']:g} | {ci(pt['attainment'], 3, 100)} | "
                         f"{ci(pt['gpu_hours'], gh_digits(pt['gpu_hours']['mean']))} |")
        lb = results["lower_bounds"][trace]
        cl = results["clairvoyant"].get(trace, {})
        L += ["", f"GPU-hours at 99.9 %: " + "; ".join(f"{p} {at_goal_text(fr)}" for p, fr in frs.items()) +
              f". Lower bound {ci(lb['gpu_hours'], gh_digits(lb['gpu_hours']['mean']))} (peak "
              f"{lb['peak_replicas']} replicas); clairvoyant-5s {ci(cl.get('attainment'), 3, 100)} % at "
              f"{ci(cl.get('gpu_hours'), gh_digits((cl.get('gpu_hours') or {}).get('mean')))} GPU-h.", ""]
    # Tuning plots
    L += ["### Tuning split (chosen knobs)", ""]
    for cold in g["colds"]:
        L.append(" ".join(f"![tuning-{_slug(cold)}-{_slug(tr)}.png](tuning-{_slug(cold)}-{_slug(tr)}.png)"
                          for tr in g["tune_traces"]))
    L.append("")
    # Cost
    L += ["## Cost of the runs", "",
          "Simulation seconds per simulated day (`SimResult.wall_s`, one process per run, every worker busy), "
          "over the runs of a day or more where the grid has any (a one-hour trace's figure is mostly set-up); the issue asks for a "
          "14-day run in ≤ 60 s per policy, knob value and seed.", "",
          "| policy | runs | s per sim day (mean) | (max) | 14-day run at the max | ≤ 60 s |", "|---|---|---|---|---|---|"]
    for p, v in t["per_policy"].items():
        L.append(f"| {p} | {v['runs']} | {num(v['s_per_sim_day_mean'], 2)} | {num(v['s_per_sim_day_max'], 2)} | "
                 f"{num(v['per_14d_max_s'], 0)} s | {'yes' if v['within_60s_per_14d'] else 'no'} |")
    L.append("")
    L += [METHOD]
    return "\n".join(L) + "\n"


METHOD = """## Method

- **Runs**: each (cold-start setting, trace, policy, knob values, seed) is one simulation through
  `gpufleet.control.step.step` with the simulator's ports (`gpufleet.sim`): the operator's own
  decision code for gpufleet (with its forecast port), the baselines of `gpufleet/sim/baselines.py`.
  The seed draws the trace's per-second counts (ServeGen), the load superposition (Azure, Mooncake
  ×4) and every cold start; the same seed gives every policy the same trace and cold-start draws.
- **Knobs**: `u` is the utilisation target: gpufleet's and the HPA's `targetUtilization` (the HPA's
  AverageValue is `targetRpsPerReplica` × u), KEDA's request-rate trigger at the same per-replica
  value, Knative's per-pod concurrency target set to the in-flight count a replica carries at u of
  its load-test rate (target percentage 100 %). `pool` is gpufleet's `warmPool.size`,
  `scale_down_delay_s` Knative's scale-down-delay; both are chosen on the tuning split.
- **Frontier**: per seed, a policy's (GPU-hours, attainment) points over u, reduced to the Pareto-
  efficient ones; GPU-hours at 99.9 % are interpolated between the two efficient points that bracket
  it, linearly in GPU-hours against -log10(1 − attainment). A frontier reaches the goal only if it
  does on every seed; "≤" marks a frontier above the goal at every u (an upper bound).
- **Intervals**: 95 % Student t-intervals over seeds (mean ± t(0.975, n−1)·sd/√n). Ratios
  (gpufleet / best baseline, policy / lower bound) are formed per seed and the interval is over
  those ratios. The best baseline is the one with the lowest mean GPU-hours at 99.9 % among those
  that reach it on every seed.
- **Verdicts** (`verdicts` in results.json, computed by `benchmarks/frontier_stats.py`): met when
  the mean ratio is at or below the goal (≤ 0.95× at warm nodes, ≤ 0.80× at ~5 and ~10 minutes;
  ≤ 1.25× the lower bound); undetermined where a frontier does not bracket the goal the way the
  comparison needs. `ci_clear` says whether the whole interval is on one side of the goal.
- **Lower bound** (`gpufleet/sim/lowerbound.py`): perfect knowledge, zero cold start, each second
  exactly the fewest replicas meeting the SLO goal for that second's load (the replica model's
  capacity table at the second's intra-second variability; a second's arrivals spread over the
  TTFT target's whole seconds, which changes nothing at a 1 s target), summed over seconds, at
  least `replicas.min`. Never simulated. It is checked, not proven: a policy can reach 99.9 %
  overall while some seconds miss, or queue a burst within a multi-second target, and so hold
  less; every policy that reaches 99.9 % below it on a seed is named (`below_bound`).
- **Where 99.9 % is out of reach** of some frontier within the targets swept, the verdict says so
  (not met, or undetermined), and beside it the same comparison is made at the highest attainment
  every frontier reaches on every seed (`at_common`), in 0.01 pp steps: how far apart the
  policies are where they can all be compared. It never decides the verdict.
- **clairvoyant-5s** (formerly "oracle"): knows the next 5 s of arrivals, sizes each second for its
  own need (with the simulator's 10 s smoothing of sub-second queueing), starts replicas
  instantly. A policy that can be simulated, not a bound.
- **Replica model, latency, traces**: as in `gpufleet/sim/model.py`, `engine.py` and `traces.py`;
  ServeGen at 0.1× the model's clients' traffic, ServeGen reasoning and the per-request traces at
  the load stated in the trace's name; TTFT target 1 s (Mooncake: twice the unloaded p95, 4 s).
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="the folder holding results.json")
    ap.add_argument("--readme", help="rewrite this README's numbers block too")
    args = ap.parse_args(argv)
    with open(os.path.join(args.out, "results.json")) as fh:
        results = json.load(fh)
    write_report(results, args.out)
    if args.readme:
        update_readme(args.readme, results, os.path.relpath(args.out, os.path.dirname(os.path.abspath(args.readme))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
