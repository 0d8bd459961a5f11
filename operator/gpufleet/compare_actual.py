"""`gpufleet report --compare-actual`: what ran against what gpufleet would have run, on the same
recorded load.

What ran is read from the same Prometheus as the load: at each step, the number of the service's
pods exporting Triton's queue gauge (`nv_inference_pending_request_count`, which every Triton
server exports while it runs) — the service's own pods, or in shadow mode (spec.targetRef) the
target Deployment's, selected by name exactly as the operator selects them. A step with no pod
reporting counts as none running. Its cost is those replica-hours at the spec's on-demand price
(pod counts do not say which ran on spot). What gpufleet would have run is the report's replay of
the current spec through the simulator (the operator's own control step and policy).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from gpufleet.adapters.metrics import PrometheusMetrics, deployment_pod_regex, selector
from gpufleet.api.models import InferenceServiceSpec


def pod_re_of(spec: InferenceServiceSpec) -> str | None:
    """The pod-name regex of a shadow service's target (None: the service's own pods)."""
    return deployment_pod_regex(spec.target_ref.name) if spec.target_ref is not None else None


def actual_query(spec: InferenceServiceSpec, *, namespace: str, name: str) -> str:
    """PromQL: how many of the service's (or its target's) Triton pods report, now."""
    return f"count(nv_inference_pending_request_count{{{selector(namespace, name, spec.model.name, pod_re_of(spec))}}})"


def actual_history(url: str, spec: InferenceServiceSpec, *, namespace: str, name: str, since_s: float,
                   step_s: float, now: float | None = None, ca_bundle: str | None = None,
                   errors: list[str] | None = None) -> list[tuple[float, float]]:
    """(time, pods reporting) over the period; why it failed goes to `errors`."""
    now = time.time() if now is None else now
    port = PrometheusMetrics(url=url.rstrip("/"), queries={"actual": actual_query(spec, namespace=namespace, name=name)},
                             stale_after_s=float(spec.metrics.stale_after_seconds), ca_bundle=ca_bundle)
    samples = port.history("actual", start=now - since_s, end=now, step=step_s)
    if port.history_error and errors is not None:
        errors.append(port.history_error)
    return samples


class Replayed(Protocol):
    """What the comparison reads of a replay (gpufleet.sim.engine.SimResult fits)."""

    seconds: int
    t: np.ndarray
    total: np.ndarray
    gpu_hours: float
    cost: float
    attainment: float


@dataclass(frozen=True)
class Side:
    mean_replicas: float
    peak_replicas: float
    gpu_hours: float
    cost: float
    cost_per_1m: float | None  # per million requests of the period
    attainment: float | None  # share of requests within the SLO (None: not measured)


@dataclass(frozen=True)
class Comparison:
    seconds: float
    requests: float
    ran: Side
    gpufleet: Side

    @property
    def saving(self) -> float | None:
        """Share of what ran's cost gpufleet would not have spent (negative: it would spend more)."""
        return 1.0 - self.gpufleet.cost / self.ran.cost if self.ran.cost > 0 else None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "saving": self.saving}


def _per_1m(cost: float, requests: float) -> float | None:
    return cost / requests * 1e6 if requests > 0 else None


def compare(actual: Sequence[tuple[float, float]], step_s: float, spec: InferenceServiceSpec,
            replay: Replayed, requests: float) -> Comparison:
    """Both sides over the recorded period: each actual sample holds for one step (missing steps:
    no pod ran), the replay's replica series up to the end of the load."""
    if not actual:
        raise ValueError("no actual replica history")
    times = np.array([t for t, _ in actual], dtype=float)
    counts = np.array([n for _, n in actual], dtype=float)
    seconds = float(times[-1] - times[0] + step_s)
    replica_s = float(counts.sum() * step_s)
    gpu_hours = replica_s / 3600.0 * spec.capacity.gpus_per_replica
    cost = gpu_hours * spec.capacity.price_per_gpu_hour.on_demand
    ran = Side(mean_replicas=replica_s / seconds, peak_replicas=float(counts.max()), gpu_hours=gpu_hours, cost=cost,
               cost_per_1m=_per_1m(cost, requests), attainment=None)
    within = replay.total[replay.t < replay.seconds] if len(replay.t) else replay.total
    series = within if len(within) else replay.total
    ours = Side(mean_replicas=float(np.mean(series)) if len(series) else 0.0,
                peak_replicas=float(np.max(series)) if len(series) else 0.0,
                gpu_hours=float(replay.gpu_hours), cost=float(replay.cost),
                cost_per_1m=_per_1m(float(replay.cost), requests), attainment=float(replay.attainment))
    return Comparison(seconds=seconds, requests=requests, ran=ran, gpufleet=ours)


def table(c: Comparison, title: str) -> Any:
    from rich.table import Table

    t = Table(title=title)
    for col in ("", "mean replicas", "peak replicas", "GPU-hours", "cost", "cost / 1M req", "SLO attainment"):
        t.add_column(col, justify="left" if not col else "right")

    def cells(side: Side) -> list[str]:
        return [f"{side.mean_replicas:.2f}", f"{side.peak_replicas:.0f}", f"{side.gpu_hours:.3f}", f"{side.cost:.3f}",
                "-" if side.cost_per_1m is None else f"{side.cost_per_1m:.2f}",
                "not measured" if side.attainment is None else f"{100 * side.attainment:.2f} %"]

    t.add_row("what ran (pods reporting)", *cells(c.ran))
    t.add_row("gpufleet (replay of the spec)", *cells(c.gpufleet))
    saving = c.saving
    t.add_row("difference", f"{c.gpufleet.mean_replicas - c.ran.mean_replicas:+.2f}",
              f"{c.gpufleet.peak_replicas - c.ran.peak_replicas:+.0f}",
              f"{c.gpufleet.gpu_hours - c.ran.gpu_hours:+.3f}", f"{c.gpufleet.cost - c.ran.cost:+.3f}",
              "", "" if saving is None else f"{100 * saving:+.1f} % saved" if saving >= 0 else
              f"{-100 * saving:.1f} % more")
    return t


def plot(actual: Sequence[tuple[float, float]], replay: Replayed, out: str) -> str:
    """Replicas over the period: what ran (steps) against the replay."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out, exist_ok=True)
    t0 = actual[0][0]
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.step([(t - t0) / 3600 for t, _ in actual], [n for _, n in actual], where="post", label="what ran")
    ax.step(replay.t / 3600, replay.total, where="post", label="gpufleet (replay)")
    ax.set_xlabel("hours")
    ax.set_ylabel("replicas")
    ax.set_title("Replicas: what ran against what gpufleet would have run")
    ax.legend()
    fig.tight_layout()
    path = os.path.join(out, "compare_actual.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
