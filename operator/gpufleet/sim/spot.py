"""SkyPilot spot traces (NSDI'24 "Can't Be Late"): 1 = a spot instance could be had / kept in a tick.

The data has no license file: it is read from ../shared/traces/spot at run time and never copied
into this repository. Fleet semantics used by the simulator: while the trace reads 0, new spot pods
stay Pending; at each 1 -> 0 transition every running spot replica receives an interruption notice
and is terminated `notice_s` later (AWS 120 s, GCP 30 s).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from gpufleet.sim.traces import SHARED_TRACES

AWS_NOTICE_S = 120.0
GCP_NOTICE_S = 30.0


@dataclass(frozen=True)
class SpotTrace:
    name: str
    available: np.ndarray  # 0/1 per tick
    gap_s: float
    notice_s: float
    offset_s: float = 0.0  # where in the trace simulated time 0 falls

    def is_available(self, t: float) -> bool:
        i = int((t + self.offset_s) // self.gap_s) % self.available.size
        return bool(self.available[i])

    def preemption_times(self, duration_s: float) -> np.ndarray:
        """Simulated times of 1 -> 0 transitions within [0, duration_s)."""
        first = int(self.offset_s // self.gap_s)
        n = int(np.ceil(duration_s / self.gap_s)) + 2
        idx = (first + np.arange(n)) % self.available.size
        a = self.available[idx]
        drops = np.flatnonzero((a[:-1] == 1) & (a[1:] == 0)) + 1
        t = (first + drops) * self.gap_s - self.offset_s
        return t[(t >= 0) & (t < duration_s)]

    def availability_share(self, duration_s: float) -> float:
        first = int(self.offset_s // self.gap_s)
        n = max(int(np.ceil(duration_s / self.gap_s)), 1)
        return float(self.available[(first + np.arange(n)) % self.available.size].mean())


def load_spot(path: str, notice_s: float | None = None, offset_s: float = 0.0) -> SpotTrace:
    if not os.path.isabs(path) and not os.path.exists(path):
        path = os.path.join(SHARED_TRACES, "spot", path)
    with open(path) as fh:
        data = json.load(fh)
    gap = float(data["metadata"]["gap_seconds"])
    avail = (np.asarray(data["data"], dtype=float) > 0).astype(np.int8)
    if notice_s is None:
        notice_s = GCP_NOTICE_S if "gcp" in path.lower() else AWS_NOTICE_S
    name = "/".join(path.split(os.sep)[-2:]).removesuffix(".json")
    return SpotTrace(name=name, available=avail, gap_s=gap, notice_s=notice_s, offset_s=offset_s)


def offset_with_preemption(trace: SpotTrace, duration_s: float, after_s: float = 600.0) -> float:
    """An offset such that the first preemption falls `after_s` into a run of `duration_s`."""
    a = trace.available
    drops = np.flatnonzero((a[:-1] == 1) & (a[1:] == 0)) + 1
    for d in drops:
        start = d * trace.gap_s - after_s
        if start >= 0:
            return float(start)
    return 0.0
