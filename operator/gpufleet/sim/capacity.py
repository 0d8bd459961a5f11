"""What n replicas can serve within the SLO, from the same service model and latency estimator.

Used for three things, all computed from the model (never from a policy's results):
- the "load test" figure a user would put in `spec.scaling.targetRpsPerReplica`;
- the perfect-knowledge oracle's replica count per second;
- static peak provisioning.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gpufleet.sim.model import LatencyBook, ReplicaModel

GOAL = 0.999  # the attainment goal of issue 4


def _decode_batch(model: ReplicaModel, rate_per_replica: float, rho: float, mean_out: float) -> float:
    """Steady in-flight decode sequences per replica (Little's law with the iteration model)."""
    b = 1.0
    for _ in range(30):
        itl = model.itl(min(b, model.max_batch))
        tchunk = itl + model.chunk_tokens / model.prefill_tps
        n_iter = rho / tchunk + (1.0 - rho) / itl
        b_new = rate_per_replica * mean_out / max(n_iter, 1e-9)
        if abs(b_new - b) < 1e-3:
            break
        b = 0.5 * (b + b_new)
    return b


@dataclass(frozen=True, slots=True)
class CapacityTable:
    """cap_tokens[n], cap_requests[n]: most prompt tokens/s and requests/s n replicas serve at GOAL."""

    ca2: float
    cap_tokens: np.ndarray
    cap_requests: np.ndarray
    rho_max: np.ndarray
    inflight_per_replica: np.ndarray  # at that load: decoding + waiting, per replica

    def replicas_for(self, tokens_s: np.ndarray, requests_s: np.ndarray) -> np.ndarray:
        nt = np.searchsorted(self.cap_tokens, tokens_s, side="left")
        nr = np.searchsorted(self.cap_requests, requests_s, side="left")
        return np.maximum(nt, nr)


def capacity_table(model: ReplicaModel, book: LatencyBook, mean_in: float, mean_out: float, ca2: float,
                   n_max: int, goal: float = GOAL) -> CapacityTable:
    caps_t = np.zeros(n_max + 1)
    caps_r = np.zeros(n_max + 1)
    rhos = np.zeros(n_max + 1)
    infl = np.zeros(n_max + 1)
    for n in range(1, n_max + 1):
        lo, hi = 0.0, 0.995
        for _ in range(12):  # attainment is monotone in rho: bisect
            mid = 0.5 * (lo + hi)
            ok = book.attainment(book.key(n, mid, ca2, 0.0)) >= goal
            rate = mid * model.prefill_rate(model.max_batch / 2) / mean_in  # per replica
            ok = ok and _decode_batch(model, rate, mid, mean_out) <= 0.95 * model.max_batch
            lo, hi = (mid, hi) if ok else (lo, mid)
        peff = model.prefill_rate(model.max_batch / 2)
        rhos[n] = lo
        caps_t[n] = lo * n * peff
        caps_r[n] = caps_t[n] / mean_in
        b = _decode_batch(model, caps_r[n] / n, lo, mean_out)
        infl[n] = b + caps_r[n] / n * book.es  # decoding + in prefill/queue (Little)
    caps_t[1:] = np.maximum.accumulate(caps_t[1:])
    caps_r[1:] = np.maximum.accumulate(caps_r[1:])
    return CapacityTable(ca2=ca2, cap_tokens=caps_t, cap_requests=caps_r, rho_max=rhos, inflight_per_replica=infl)


def oracle_replicas(model: ReplicaModel, book: LatencyBook, counts: np.ndarray, in_tokens: np.ndarray,
                    ca2: np.ndarray, mean_in: float, mean_out: float, n_max: int, window_s: int = 1) -> np.ndarray:
    """Fewest replicas per second meeting the goal for the actual arrivals (capped at n_max).

    With window_s > 1 the oracle sizes for the prompt work arriving over the next window_s seconds
    instead of each second alone: a burst may queue for part of the TTFT target without missing it.
    The benchmark keeps the cheapest window whose run still reaches the goal.
    """
    import pandas as pd  # type: ignore[import-untyped]

    w = max(1, int(window_s))
    if w > 1:

        def fwd(x: np.ndarray) -> np.ndarray:
            return np.asarray(pd.Series(x[::-1]).rolling(w, min_periods=1).mean().to_numpy()[::-1], dtype=float)

        in_tokens, counts = fwd(in_tokens), fwd(counts)

    # The simulator's sub-second queueing follows a 10 s EWMA of the offered load (engine.py):
    # size for whichever is larger, this second's load or the recent average.
    smooth = pd.Series(in_tokens).ewm(alpha=0.1, adjust=False).mean().to_numpy()
    in_tokens = np.maximum(in_tokens, smooth / 0.98)
    counts = np.maximum(counts, smooth / max(mean_in, 1e-9))
    need = np.ones(counts.size, dtype=np.int64)
    bins = np.round(np.minimum(ca2, 50.0) * 4.0) / 4.0
    for c in np.unique(bins):
        sel = bins == c
        tab = capacity_table(model, book, mean_in, mean_out, float(c), n_max)
        need[sel] = tab.replicas_for(in_tokens[sel], counts[sel])
    return np.clip(need, 1, n_max)
