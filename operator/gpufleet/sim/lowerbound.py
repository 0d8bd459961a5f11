"""A true lower bound on GPU-hours: perfect knowledge, zero cold start, exactly each second's need.

For every second of a trace, the fewest replicas that serve that second's arrivals within the SLO
goal, from the same replica model and latency estimator every policy is judged by
(`sim.capacity.capacity_table`: the most prompt tokens/s and requests/s n replicas serve at the
goal, at the second's intra-second arrival variability). The bound is the sum over seconds:

    GPU-hours = gpus_per_replica * sum_t need(t) / 3600

No policy can hold fewer replicas in a second than that second needs without letting its requests
queue into the next one, and no policy starts a replica in zero seconds. What the bound leaves
out, on purpose, so that it stays below every policy:
- the simulator's 10 s smoothing of sub-second queueing (a policy pays for a burst's echo; the
  bound does not), and the fluid queue's carry-over (a backlog costs the bound nothing);
- integer replicas are kept (a replica is the unit anyone can buy), the spec's `replicas.min`
  too (every policy runs at least that many);
- the drain tail after the trace and any time a replica spends starting or draining.

It is a bound, not a policy: it is never simulated. "clairvoyant-5s" (`sim.baselines.Oracle` run
by `Scenario.run_clairvoyant`) is the closest policy that can be simulated: it knows the next 5 s
of arrivals, sizes for each second's need with the smoothing above, and starts replicas
instantly. A policy may still undercut the bound at a *lower* attainment (by giving up its peak
seconds); at the goal's attainment, met second by second, it cannot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gpufleet.sim.capacity import GOAL, capacity_table
from gpufleet.sim.model import LatencyBook, ReplicaModel
from gpufleet.sim.traces import Trace

CA2_STEP = 0.25  # intra-second variability bins (as sim.capacity.oracle_replicas)
CA2_MAX = 50.0
N_MAX_LIMIT = 4096  # a second needing more replicas than this is held at it (and counted)


@dataclass(frozen=True)
class LowerBound:
    need: np.ndarray  # replicas per second of the trace
    gpus_per_replica: int
    goal: float
    capped_s: int  # seconds whose need exceeded N_MAX_LIMIT (held there: the bound is then lower still)

    @property
    def gpu_hours(self) -> float:
        return self.gpu_hours_between(0, int(self.need.size))

    def gpu_hours_between(self, start_s: int, end_s: int) -> float:
        """The bound over the seconds [start_s, end_s) of the trace."""
        return float(self.need[start_s:end_s].sum()) * self.gpus_per_replica / 3600.0

    @property
    def peak(self) -> int:
        return int(self.need.max()) if self.need.size else 0

    @property
    def mean(self) -> float:
        return float(self.need.mean()) if self.need.size else 0.0


def per_second_need(trace: Trace, model: ReplicaModel, target_s: float, *, n_min: int = 1,
                    goal: float = GOAL) -> tuple[np.ndarray, int]:
    """(need per second, seconds capped): the fewest replicas meeting `goal` for each second's load."""
    book = LatencyBook(model, trace.in_sample, target_s)
    mean_in = float(np.mean(trace.in_sample)) or 1.0
    mean_out = float(np.mean(trace.out_sample)) or 1.0
    need = np.zeros(trace.seconds, dtype=np.int64)
    bins = np.round(np.minimum(trace.ca2, CA2_MAX) / CA2_STEP) * CA2_STEP
    tokens = np.asarray(trace.in_tokens, dtype=float)
    counts = np.asarray(trace.counts, dtype=float)
    capped = 0
    for c in np.unique(bins):
        sel = np.flatnonzero(bins == c)
        n_max = 64
        while True:
            tab = capacity_table(model, book, mean_in, mean_out, float(c), n_max, goal=goal)
            got = tab.replicas_for(tokens[sel], counts[sel])
            over = got > n_max  # beyond the table: a larger one decides
            if not over.any() or n_max >= N_MAX_LIMIT:
                capped += int(over.sum())
                need[sel] = np.minimum(got, n_max)
                break
            n_max = min(N_MAX_LIMIT, 2 * n_max)
    loaded = counts > 0
    need[~loaded] = 0
    return np.maximum(need, n_min), capped


def lower_bound(trace: Trace, model: ReplicaModel, target_s: float, *, n_min: int = 1,
                gpus_per_replica: int = 1, goal: float = GOAL) -> LowerBound:
    need, capped = per_second_need(trace, model, target_s, n_min=n_min, goal=goal)
    return LowerBound(need=need, gpus_per_replica=gpus_per_replica, goal=goal, capped_s=capped)
