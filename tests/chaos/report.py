"""reports/reliability: the chaos run's trials summarised per fault (results.json) and the page
that shows them (README.md). Every figure and verdict on the page is computed from the trials."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tests.chaos.harness import DRAIN_S, INTERVAL_S, PROMETHEUS_WATCH_S, READY_S, Config, Trial

LOSSES = ("orphaned", "duplicated", "left_out", "blind_scale_downs", "below_need", "dropped")


@dataclass(frozen=True)
class Row:
    fault: str
    trials: int
    converged: int
    worst_converge_s: float | None
    within_budget: int  # trials converged within their budget (harness.budget_s)
    orphaned: int
    duplicated: int
    left_out: int
    blind_scale_downs: int
    below_need: int
    dropped: float
    min_capacity: float
    max_queue_ms: float
    warnings: int  # MetricsUnavailable Warnings posted
    warning_causes: int  # distinct messages among them

    @property
    def losses(self) -> float:
        return self.orphaned + self.duplicated + self.left_out + self.blind_scale_downs + self.below_need + self.dropped

    @property
    def ok(self) -> bool:
        return self.losses == 0 and self.converged == self.trials == self.within_budget


def summarise(trials: list[Trial]) -> list[Row]:
    rows = []
    for fault in dict.fromkeys(t.fault for t in trials):
        ts = [t for t in trials if t.fault == fault]
        times = [t.converge_s for t in ts if t.converge_s is not None]
        rows.append(Row(
            fault=fault, trials=len(ts), converged=sum(t.converged for t in ts),
            worst_converge_s=max(times) if times else None,
            within_budget=sum(1 for t in ts if t.converge_s is not None and t.converge_s <= t.budget_s),
            orphaned=sum(t.orphaned for t in ts), duplicated=sum(t.duplicated for t in ts),
            left_out=sum(t.left_out for t in ts), blind_scale_downs=sum(t.blind_scale_downs for t in ts),
            below_need=sum(t.below_need for t in ts),
            dropped=round(sum(t.dropped for t in ts), 1), min_capacity=min(t.min_capacity for t in ts),
            max_queue_ms=max(t.max_queue_ms for t in ts), warnings=sum(t.warnings for t in ts),
            warning_causes=sum(t.warning_causes for t in ts)))
    return rows


EFFECTS = {
    "kill -9": "the operator SIGKILLed at a random point 0-8 s into the phase and started again at once",
    "kube-apiserver": "kube-apiserver SIGKILLed 0-2 s after a load step (mid-tick) and started again",
    "etcd": "etcd SIGKILLed 0-2 s after a load step and started again",
    "blackholed": "every byte between the operator and the API server held (a loopback proxy), a load step at the start",
    "Prometheus stopped": "the service's own Prometheus process stopped, then started again on the same data",
    "Prometheus +": "a proxy holding each of the service's Prometheus requests before passing it on",
    "out of the scrape": "one of the service's four serving pods left out of its Prometheus's targets",
    "spot storm": "every spot node tainted at once (Karpenter's taint for 120 s, GKE's for 30 s), then its pods and the Node deleted",
}


def write(out: Path, trials: list[Trial], cfg: Config, *, command: str, duration_s: float, machine: str,
          loadavg: list[float] | None = None, skipped: list[str] | None = None) -> list[Row]:
    out.mkdir(parents=True, exist_ok=True)
    rows = summarise(trials)
    load = loadavg or [0.0]
    data: dict[str, Any] = {
        "command": command, "seed": cfg.seed, "config": asdict(cfg), "duration_s": round(duration_s),
        "machine": machine, "interval_s": INTERVAL_S, "cold_start_s": READY_S, "drain_s": DRAIN_S,
        "prometheus_watch_s": PROMETHEUS_WATCH_S,
        "load_average": {"mean": round(sum(load) / len(load), 1), "max": round(max(load), 1)},
        "skipped": list(skipped or []),
        "summary": [{**asdict(r), "ok": r.ok} for r in rows],
        "ok": all(r.ok for r in rows), "trials": [asdict(t) for t in trials],
    }
    (out / "results.json").write_text(json.dumps(data, indent=1) + "\n")
    rerender(out)
    return rows


def rerender(out: Path) -> None:
    """README.md from results.json and, where `make fuzz` left one, fuzz.json."""
    data = json.loads((out / "results.json").read_text())
    fuzz = out / "fuzz.json"
    data["fuzz"] = json.loads(fuzz.read_text()) if fuzz.exists() else None
    trials = [Trial(**t) for t in data["trials"]]
    (out / "README.md").write_text(render(data, summarise(trials)))


def fuzz_section(fuzz: dict[str, Any] | None) -> list[str]:
    """The spec fuzzer's last run (`make fuzz`, tests/integration/test_spec_fuzz.py: fuzz.json)."""
    if fuzz is None:
        return ["", "## Spec fuzzing", "", "No `make fuzz` run recorded beside this report (fuzz.json)."]
    lines = ["", "## Spec fuzzing", "",
             f"`{fuzz['command']}` (seed {fuzz['seed']}, {fuzz['elapsed_s']:.0f} s): **{fuzz['tried']} specs tried**, "
             f"{fuzz['admitted']} admitted by the API server, **{fuzz['crashed']} admitted specs crashed or wedged** "
             "the operator's parsing, sizing, loop or status encoding (goal: none; docs/safety.md says what each "
             "stage is and what earlier runs found).", "", "| outcome | specs |", "|---|---|"]
    lines += [f"| {outcome} | {n} |" for outcome, n in sorted(fuzz["outcomes"].items(), key=lambda kv: -kv[1])]
    return lines


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:g}"


def render(data: dict[str, Any], rows: list[Row]) -> str:
    cfg = data["config"]
    lines = [
        "# Reliability: the chaos suite on the local real cluster",
        "",
        f"Produced by `{data['command']}` (the seed repeats the "
        f"fault schedule) in {data['duration_s'] / 60:.1f} min on {data['machine']}, shared with other work: "
        f"the 1-minute load average was {data['load_average']['mean']:g} on average and "
        f"{data['load_average']['max']:g} at most. Generated by `tests/chaos` from `results.json` (every trial is "
        "there); do not edit by hand.",
        "",
        "One operator (out of cluster, its own shard, reaching kube-apiserver through a loopback TCP proxy) runs eight "
        "InferenceServices on the kwokctl cluster (kube-apiserver, etcd, controller manager, scheduler, KWOK nodes), "
        "the fleet emulator playing Triton in every pod and Debian's Prometheus scraping it every second. Every "
        f"service ticks every {data['interval_s']} s; a new pod takes {data['cold_start_s']} s to turn Ready.",
        "",
        "## Results",
        "",
        "| fault | trials | converged | worst time to converge (s) | within budget | orphaned or duplicated pods "
        "| pods left out of the Service | scale-downs on missing or partial data | scale-downs below the need "
        "| requests dropped | lowest capacity | worst queue (ms) | MetricsUnavailable Warnings (distinct) | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r.fault} | {r.trials} | {r.converged} | {_fmt(r.worst_converge_s)} | {r.within_budget} "
                     f"| {r.orphaned + r.duplicated} | {r.left_out} | {r.blind_scale_downs} | {r.below_need} | {_fmt(r.dropped)} "
                     f"| {r.min_capacity:.0%} | {_fmt(r.max_queue_ms)} | {r.warnings} ({r.warning_causes}) "
                     f"| {'met' if r.ok else '**missed**'} |")
    bad = [r.fault for r in rows if not r.ok]
    lines += [
        "",
        "**Goal: zero in every loss column, every trial converged within two intervals of the fault clearing** "
        "(plus a cold start, or a drain, where the trial needed one: \"within budget\" below). "
        + ("Met for every fault." if not bad else f"Missed for: {', '.join(bad)}."),
        "",
        "Trials skipped (a baseline that never came): " + ("; ".join(data["skipped"]) if data["skipped"] else "none") + ".",
        "",
        "## Reading the columns",
        "",
        "- **trials**: kill -9 rounds SIGKILL the operator once while five services are each in a phase (each a trial); "
        "every other fault is one trial per service it can touch.",
        "- **converged**: after the fault clears (the new operator's startup done, `/readyz` answering again, the "
        "proxy or Prometheus restored, the spot nodes gone), a decision made since then that the fleet matches: "
        "serving and standby pods Ready in the numbers decided, nothing starting or draining, every serving pod in "
        "the Service's EndpointSlices, every pod under the service's own Deployments, none on a node going away, "
        "and enough serving pods for the offered load.",
        f"- **within budget**: converged within two intervals ({2 * data['interval_s']} s), plus one cold start "
        f"({data['cold_start_s']} s) when the fleet needed a pod created after the fault cleared (no operator can "
        "make a pod Ready faster than its model loads), plus one drain timeout "
        f"(`drainTimeoutSeconds`, {data.get('drain_s', DRAIN_S)} s) when a pod on a node going away was still "
        "there after it cleared: such a pod may hold requests, so it drains before it goes, after its "
        "replacement is Ready (make-before-break), and a plain-Triton pod reads idle only after 30 s without "
        "work, so its drain runs to the timeout; plus one interval for each scale-up step beyond the first that "
        "the spec's own step limit asks for (`scaling.scaleUp`, by default the HPA's 4 pods or 100 % a step: "
        "2 to 8 serving is two steps, a tick apart, whatever the fault). A kill -9's clock starts when the new "
        "operator's startup is done (its own process start is not counted).",
        "- **orphaned or duplicated**: at the end of the trial, pods not controlled through the service's own "
        "Deployments, or more pods than their Deployment's replicas.",
        "- **left out of the Service**: at the end, serving pods missing from the endpoints plus Ready idle pods "
        "beyond the standbys decided.",
        "- **scale-downs on missing or partial data**: decisions (a watch on the InferenceServices) that lowered "
        "the serving count while `MetricsAvailable` was not True, or, for a Prometheus fault, at any time the "
        "fault lasted (the load did not change, so every lower count is blind).",
        "- **scale-downs below the need**: decisions that lowered the serving count below what the offered load "
        "needs (load / `targetRpsPerReplica`, at least `replicas.min`), whatever `MetricsAvailable` said: data the "
        "operator took as complete can still undercount. After a Prometheus fault the decisions are followed "
        f"{data.get('prometheus_watch_s', 75):g} s past its clearing (a Prometheus back, or a pod back in its scrape, "
        "answers rates over part of their window for a minute), not only until the fleet converged.",
        "- **requests dropped**: the emulator's count (`GET /stats`): offered while no pod of the service served, "
        "or queued or in flight on a pod that went away: deleted with no grace period (a node gone), or still "
        "holding work when its grace period ended (a terminating pod finishes its requests meanwhile, as Triton "
        "does on SIGTERM within `--exit-timeout-secs`; the emulator's module doc).",
        "- **lowest capacity**: serving pods × `targetRpsPerReplica` / offered load, lowest 1-second sample "
        "during the trial (capped at 100%); **worst queue**: the highest 1-second mean queue time. For the "
        "kill -9 phases the trial starts at the phase's own load step, so these include the lag any scale-up "
        "has (pods take a cold start to serve); for the other faults the load was steady unless noted.",
        "- **MetricsUnavailable Warnings**: posted for the service from the fault on, and how many distinct "
        "messages among them: one per cause (by kind) per operator process is the rule, so a restarted "
        "operator posts a cause that is still there once more.",
        "",
        "## What each fault did",
        "",
    ]
    for key, text in EFFECTS.items():
        hit = [r for r in rows if key in r.fault]
        if not hit:
            continue
        worst_q = max(r.max_queue_ms for r in hit)
        low = min(r.min_capacity for r in hit)
        line = f"- **{key}**: {text}. Capacity: lowest {low:.0%} of the offered load; queue time: worst {worst_q:g} ms."
        starts = [t["cleared"] - t["injected"] for t in data["trials"] if key in t["fault"]]
        if key == "kill -9" and starts:  # the clock starts once the new process's startup is done
            line += (f" The new process's own start (not counted in its convergence) took "
                     f"{min(starts):.1f}-{max(starts):.1f} s.")
        lines.append(line)
    lines += fuzz_section(data.get("fuzz"))
    lines += [
        "",
        "## Settings",
        "",
        f"`{json.dumps(cfg)}`",
        "",
        "`make chaos` runs the full set (CHAOS_ROUNDS, CHAOS_PROMETHEUS_S, CHAOS_BLACKHOLE_S, CHAOS_SEED change it); "
        "`tests/integration/test_chaos.py` runs a reduced set in `make test` and asserts the loss columns are zero.",
        "",
    ]
    return "\n".join(lines)
