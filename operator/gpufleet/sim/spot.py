"""SkyPilot spot traces (NSDI'24 "Can't Be Late"): 1 = a spot instance could be had / kept in a tick.

The data has no license file: it is read from ../shared/traces/spot at run time and never copied
into this repository. Fleet semantics used by the simulator: while the trace reads 0, new spot pods
stay Pending; at each 1 -> 0 transition every running spot replica receives an interruption notice
and is terminated `notice_s` later (AWS 120 s, GCP 30 s).

Several zones of one region (`load_spot_zones`): a spot capacity class is usually a nodeSelector
(`karpenter.sh/capacity-type: spot`) that Karpenter or a multi-zone node group fills in whichever
zone has capacity. A new spot pod can be placed while at least one zone reads 1 (`available` is the
union; the fleet picks the zone, see SimFleet); a running pod lives in its zone and is noticed at
that zone's 1 -> 0 transitions only (`preemption_events`); Pending pods wait while every zone reads 0.
A single-zone trace is zone 0 of itself.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from gpufleet.sim.traces import SHARED_TRACES

AWS_NOTICE_S = 120.0
GCP_NOTICE_S = 30.0


def _drops(a: np.ndarray) -> np.ndarray:
    """Indices i where a[i-1] == 1 and a[i] == 0."""
    return np.flatnonzero((a[:-1] == 1) & (a[1:] == 0)) + 1


@dataclass(frozen=True, slots=True)
class SpotTrace:
    name: str
    available: np.ndarray  # 0/1 per tick; with zones, the union (1 where any zone reads 1)
    gap_s: float
    notice_s: float
    offset_s: float = 0.0  # where in the trace simulated time 0 falls
    zones: np.ndarray | None = None  # (n_zones, ticks) 0/1 per zone, or None: a single zone
    zone_names: tuple[str, ...] = ()

    def rows(self) -> list[np.ndarray]:
        """One 0/1 row per zone (the trace itself for a single zone)."""
        return [self.available] if self.zones is None else list(self.zones)

    def _index(self, t: float) -> int:
        return int((t + self.offset_s) // self.gap_s) % self.available.size

    def is_available(self, t: float) -> bool:
        return bool(self.available[self._index(t)])

    def available_zones(self, t: float) -> list[int]:
        """Zones (indices) where a new spot node can be had at `t`; [0] or [] for one zone."""
        i = self._index(t)
        if self.zones is None:
            return [0] if self.available[i] else []
        return [int(z) for z in np.flatnonzero(self.zones[:, i])]

    def _times(self, a: np.ndarray, duration_s: float) -> np.ndarray:
        first = int(self.offset_s // self.gap_s)
        n = int(np.ceil(duration_s / self.gap_s)) + 2
        idx = (first + np.arange(n)) % a.size
        t = (first + _drops(a[idx])) * self.gap_s - self.offset_s
        return t[(t >= 0) & (t < duration_s)]

    def preemption_events(self, duration_s: float) -> list[tuple[float, int]]:
        """(time, zone) of every zone's 1 -> 0 transitions within [0, duration_s), sorted."""
        return sorted((float(t), z) for z, row in enumerate(self.rows()) for t in self._times(row, duration_s))

    def availability_share(self, duration_s: float) -> float:
        first = int(self.offset_s // self.gap_s)
        n = max(int(np.ceil(duration_s / self.gap_s)), 1)
        return float(self.available[(first + np.arange(n)) % self.available.size].mean())

    def zone_shares(self, duration_s: float) -> list[float]:
        """Availability of each zone over the run (the union's for a single zone)."""
        first = int(self.offset_s // self.gap_s)
        n = max(int(np.ceil(duration_s / self.gap_s)), 1)
        return [float(row[(first + np.arange(n)) % row.size].mean()) for row in self.rows()]


def _resolve(path: str) -> str:
    if not os.path.isabs(path) and not os.path.exists(path):
        path = os.path.join(SHARED_TRACES, "spot", path)
    return path


def load_spot(path: str, notice_s: float | None = None, offset_s: float = 0.0) -> SpotTrace:
    path = _resolve(path)
    with open(path) as fh:
        data = json.load(fh)
    gap = float(data["metadata"]["gap_seconds"])
    avail = (np.asarray(data["data"], dtype=float) > 0).astype(np.int8)
    if notice_s is None:
        notice_s = GCP_NOTICE_S if "gcp" in path.lower() else AWS_NOTICE_S
    name = "/".join(path.split(os.sep)[-2:]).removesuffix(".json")
    return SpotTrace(name=name, available=avail, gap_s=gap, notice_s=notice_s, offset_s=offset_s)


def load_spot_zones(paths: list[str], notice_s: float | None = None, offset_s: float = 0.0) -> SpotTrace:
    """One spot class over several zones (same gap; cut to the shortest file). Name: the first
    file's name, then '+' and each further file's basename."""
    traces = [load_spot(p, notice_s) for p in paths]
    if len(traces) == 1:
        return traces[0]
    gaps = {t.gap_s for t in traces}
    if len(gaps) != 1:
        raise ValueError(f"zones with different tick lengths: {sorted(gaps)}")
    n = min(t.available.size for t in traces)
    zones = np.stack([t.available[:n] for t in traces]).astype(np.int8)
    name = "+".join([traces[0].name] + [t.name.split("/")[-1] for t in traces[1:]])
    return SpotTrace(name=name, available=zones.max(axis=0), gap_s=traces[0].gap_s,
                     notice_s=min(t.notice_s for t in traces) if notice_s is None else notice_s,
                     offset_s=offset_s, zones=zones, zone_names=tuple(t.name for t in traces))


def offset_with_preemption(trace: SpotTrace, duration_s: float, after_s: float = 600.0) -> float:
    """An offset such that the first preemption (of any zone) falls `after_s` into a run of
    `duration_s`."""
    drops = np.unique(np.concatenate([_drops(row) for row in trace.rows()]))
    for d in drops:
        start = d * trace.gap_s - after_s
        if start >= 0:
            return float(start)
    return 0.0
