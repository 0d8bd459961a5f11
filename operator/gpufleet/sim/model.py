"""Replica service model, cold-start distribution and the request-latency estimator.

Engine modelled: a Llama-3-8B-class model under TensorRT-LLM with in-flight batching on one
H100/H200, bf16. Figures and where they come from (../shared/calibration, ../shared/traces/coldstart):

- Prefill: 24,000 prompt tokens/s per replica. The calibration measured 128 x 512 prompt tokens in
  0.371 s for a 1.1B model (177k tokens/s, ~40 % of the H200's dense bf16 peak: prefill is
  compute-bound, so even eager HF is near a real engine here). Scaled by parameters 1.1/8.
- Decode: inter-token latency 7 ms at batch 1 (8B bf16 weights, 16 GB read per step at ~3.3 TB/s
  = 4.8 ms, plus kernel/launch overhead as in TensorRT-LLM). The calibration's *shape* is kept:
  ITL(batch) / ITL(1) interpolated from the measured curve (1.00 at 1 ... 1.14 at 128, made
  monotone). The calibration's absolute 53-61 ms is eager-Python overhead and is not used.
- Batching: at most 128 sequences in flight per replica (the calibrated range); prompts are
  processed in chunks of 2,048 tokens piggy-backed on decode iterations (chunked context), so an
  iteration with a chunk takes ITL(b) + 2048/24000 s and decode slows while prompts wait.
- Cold start (pod creation to Ready): sim/coldstart.py (ColdStart, the simple lognormal with median
  48 s and p90 79 s, re-exported here; NodeColdStart and COLD_SETTINGS, Time-to-Ready as stages
  with the node: provisioning, image pull, weight download and load, server start).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from gpufleet.sim.coldstart import ColdStart as ColdStart  # noqa: PLC0414  (re-exported: it lived here)

# Normalised ITL shape from ../shared/calibration/h200-transformers-llama1b.json (batch -> ITL/ITL(1)).
_CAL_BATCH = np.array([1, 4, 16, 64, 128], dtype=float)
_CAL_ITL_MS = np.array([53.1, 57.37, 49.27, 60.7, 60.74])


def itl_shape(batch: np.ndarray) -> np.ndarray:
    shape = np.maximum.accumulate(_CAL_ITL_MS / _CAL_ITL_MS[0])  # monotone: more work never faster
    return np.asarray(np.interp(np.log2(np.maximum(batch, 1.0)), np.log2(_CAL_BATCH), shape), dtype=float)


@dataclass(frozen=True, slots=True)
class ReplicaModel:
    prefill_tps: float = 24000.0
    itl1_s: float = 0.007
    max_batch: int = 128
    chunk_tokens: int = 2048
    # itl_table[b] = decode iteration time with b sequences in flight (index 0..max_batch).
    itl_table: tuple[float, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if not self.itl_table:
            b = np.arange(self.max_batch + 1, dtype=float)
            object.__setattr__(self, "itl_table", tuple(float(x) for x in self.itl1_s * itl_shape(b)))

    def itl(self, batch: float) -> float:
        i = int(batch)
        return self.itl_table[i if i < self.max_batch else self.max_batch]

    def prefill_rate(self, batch: float) -> float:
        """Prompt tokens/s one replica processes while prompts wait (chunks share iterations with decode)."""
        return self.chunk_tokens / (self.itl(batch) + self.chunk_tokens / self.prefill_tps)

    def first_token_s(self, in_tokens: np.ndarray, batch: float = 0.0) -> np.ndarray:
        """TTFT of a request on an idle-queue replica: its own prompt, then one decode iteration."""
        return np.asarray(in_tokens, dtype=float) / self.prefill_rate(batch) + self.itl(batch)


# ---------------------------------------------------------------------------------------------
# Latency estimator.


def erlang_c(c: int, rho: float) -> float:
    """Probability that an arrival waits in an M/M/c queue at utilisation rho (stable log-space form)."""
    if c <= 0 or rho >= 1.0:
        return 1.0
    if rho <= 0.0:
        return 0.0
    a = c * rho
    # sum_{k<c} a^k/k! and a^c/c!, scaled by exp(-a) (Poisson pmf) to avoid overflow
    k = np.arange(c)
    logp = k * math.log(a) - a - np.array([math.lgamma(x + 1) for x in k])
    head = float(np.exp(logp).sum())
    tail = math.exp(c * math.log(a) - a - math.lgamma(c + 1)) / (1.0 - rho)
    return tail / (head + tail)


# Log-spaced TTFT histogram bins: 1 ms .. 2000 s.
HIST_EDGES = np.logspace(-3, math.log10(2000.0), 481)

StateKey = tuple[int, int, int, int]


@dataclass(slots=True)
class BookMemo:
    """What a LatencyBook computes per state from its inputs alone (model, prompt sample, target,
    slack, points): books built from the same inputs, the simulator's runs of one trace, share it."""

    attain: dict[StateKey, float] = field(default_factory=dict)
    erlang: dict[tuple[int, int], float] = field(default_factory=dict)
    # The engine's per-state metrics (share meeting the SLO, TTFT p95 ms, mean wait s).
    by_state: dict[StateKey, tuple[float, float, float]] = field(default_factory=dict)
    # Per state, the histogram bins its TTFT grid falls in: (bins, counts, grid size), the bins
    # with a count only (uint16: 480 bins, a grid of 2,048 points at the default 256).
    bins: dict[StateKey, tuple[np.ndarray, np.ndarray, int]] = field(default_factory=dict)

    @staticmethod
    def key(model: ReplicaModel, in_sample: np.ndarray, target_s: float, slack: float = 1.5,
            n_points: int = 256) -> bytes:
        """Every input of a LatencyBook, exactly."""
        head = (model.prefill_tps, model.itl1_s, model.max_batch, model.chunk_tokens, model.itl_table,
                float(target_s), float(slack), int(n_points))
        return repr(head).encode() + b"|" + np.asarray(in_sample, dtype=float).tobytes()


class LatencyBook:
    """Accumulates TTFT distributions of request cohorts by quantised queue state.

    Each second's arrivals (or a backlog cohort when it reaches service) are described by the
    serving replica count c, the prompt-server utilisation rho, the intra-second arrival
    variability ca2 and the fluid FIFO wait fw. A request's TTFT is
        fw + W + s,  s = own prompt time (from the trace's token sample),
    where W is the M/G/c waiting time: 0 with probability 1 - C(c, rho) (Erlang C) and otherwise
    exponential with mean (ca2 + cs2)/2 * E[s]/(c(1 - rho)) (Allen-Cunneen). States are quantised
    (rho in 0.005 steps, fw in 2 % steps) and each distinct state is evaluated once, so a 14-day run
    costs a dictionary update per second.

    SLO: a request meets it when TTFT <= max(target, slack x its own unloaded TTFT): a prompt whose
    prefill alone exceeds the target cannot meet it on any fleet, so it is judged against its own
    unloaded time with slack (1.5x), and attainment measures scaling, not prompt length.
    """

    def __init__(self, model: ReplicaModel, in_sample: np.ndarray, target_s: float, slack: float = 1.5,
                 n_points: int = 256, memo: BookMemo | None = None) -> None:
        """`memo`: per-state values shared with books of the same inputs (BookMemo.key)."""
        qs = (np.arange(n_points) + 0.5) / n_points
        ins = np.quantile(np.asarray(in_sample, dtype=float), qs)
        self.s = model.first_token_s(ins, batch=model.max_batch / 2)  # own-prompt time, mid-batch
        self.es = float(self.s.mean())
        self.cs2 = float(self.s.var() / self.es**2) if self.es > 0 else 1.0
        s0 = model.first_token_s(ins, batch=0.0)
        self.deadline = np.maximum(target_s, slack * s0)
        self.target_s = target_s
        self.counts: dict[tuple[int, int, int, int], float] = {}
        memo = memo if memo is not None else BookMemo()
        self._attain: dict[tuple[int, int, int, int], float] = memo.attain
        self._erlang: dict[tuple[int, int], float] = memo.erlang
        self._bins = memo.bins
        self.unserved_ok = 0.0  # met-SLO requests later lost in flight (subtracted from attainment)

    @staticmethod
    def key(c: int, rho: float, ca2: float, fw: float) -> tuple[int, int, int, int]:
        # rho in 0.005 steps (rounded up: pessimistic), ca2 in ~19 % steps, fw in ~4 % steps
        r = int(rho * 200.0) if rho < 0.995 else 199
        a = 0 if ca2 <= 1.0 else int(math.log2(ca2) * 4.0 + 0.999)
        f = 0 if fw < 0.002 else 1 + int(math.log(fw / 0.002) * 25.0)
        return (c, r, a, f)

    @staticmethod
    def _ca2_of(a: int) -> float:
        return 1.0 if a == 0 else 2.0 ** (a / 4.0)

    def _params(self, k: tuple[int, int, int, int]) -> tuple[float, float, float]:
        c, r, a, f = k
        rho = (r + 1) / 200.0
        fw = 0.0 if f == 0 else 0.002 * math.exp((f - 0.5) / 25.0)
        ek = (c, r)
        pc = self._erlang.get(ek)
        if pc is None:
            pc = erlang_c(c, rho)
            self._erlang[ek] = pc
        mean_w = (self._ca2_of(a) + self.cs2) / 2.0 * self.es / (max(c, 1) * max(1.0 - rho, 0.005))
        return fw, pc, mean_w

    def attainment(self, k: tuple[int, int, int, int]) -> float:
        v = self._attain.get(k)
        if v is None:
            fw, pc, m = self._params(k)
            slack = self.deadline - self.s - fw
            ok0 = (slack >= 0).astype(float)
            okw = np.where(slack > 0, 1.0 - np.exp(-np.maximum(slack, 0.0) / max(m, 1e-9)), 0.0)
            v = float(((1.0 - pc) * ok0 + pc * okw).mean())
            self._attain[k] = v
        return v

    def add(self, k: tuple[int, int, int, int], n: float) -> float:
        """Record n requests in state k; returns the share of them meeting the SLO."""
        self.counts[k] = self.counts.get(k, 0.0) + n
        return self.attainment(k)

    def histogram(self) -> np.ndarray:
        """TTFT histogram (counts per HIST_EDGES bin) over everything recorded."""
        hist = np.zeros(HIST_EDGES.size - 1)
        u = (np.arange(16) + 0.5) / 16
        s = self.s[::2]
        bins = self._bins
        for k, n in self.counts.items():
            b = bins.get(k)
            if b is None:
                fw, pc, m = self._params(k)
                w = np.where(u < 1 - pc, 0.0, -m * np.log(np.clip((1 - u) / max(pc, 1e-12), 1e-12, 1.0)))
                grid = (fw + s[:, None] + w[None, :]).ravel()
                idx = np.clip(np.searchsorted(HIST_EDGES, grid) - 1, 0, hist.size - 1)
                count = np.bincount(idx, minlength=hist.size)
                at = np.flatnonzero(count)
                small = np.uint16 if grid.size <= np.iinfo(np.uint16).max else np.int64
                b = (at.astype(np.uint16), count[at].astype(small), grid.size)
                bins[k] = b
            at, count, size = b
            # = hist += bincount * (n / size): the bins without a count would add 0.0
            hist[at] += count * (n / size)
        return hist

    def met(self) -> float:
        return sum(n * self.attainment(k) for k, n in self.counts.items())


def hist_percentile(hist: np.ndarray, q: float) -> float:
    total = hist.sum()
    if total <= 0:
        return float("nan")
    cum = np.cumsum(hist) / total
    i = int(np.searchsorted(cum, q))
    i = min(i, hist.size - 1)
    return float(math.sqrt(HIST_EDGES[i] * HIST_EDGES[i + 1]))
