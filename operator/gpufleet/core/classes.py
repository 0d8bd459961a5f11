"""Capacity classes as a list: the cheapest mix of GPU types that serves the need.

A service may run on several classes (an H100, an L4, a MIG 3g.40gb slice, each on-demand or
spot), each with a price per replica-hour and a capacity per replica in requests/s. Given the
need in requests/s, `choose` returns the replicas per class that meet it at the least cost per
hour, within each class's min/max and max share, the spot share, and the classes that can be
had now. It is a small integer program (one variable per class), solved exactly by HiGHS
(scipy.optimize.milp): greedy by cost per request is wrong at the margin, where one more large
GPU can cost more than the two small ones the remainder needs.

A class that cannot be had (its pods Pending past pendingTimeoutSeconds, an interruption notice,
no node of its product) gets no new replicas; its Ready replicas stay while the mix wants them
(they run, and moving them costs cold starts). It comes back after the same hysteresis as spot
(core.spotback.backoff: returnAfterSeconds, doubling after an outage that follows a return
within the hour, up to 8x). New replicas carry a small start cost (`START_COST_H` hours of
their price), so a mix of equal cost does not churn from tick to tick.

Every choice has a reason ("l4 stocked out (pods Pending past 120s): serving on a100 at 1.9x
the cost per request").

Shared limits (`Limit`): a GPUQuota caps what the service's classes hold together per capped
dimension (a GPU product's node pool, a resource, cost per hour); `choose` keeps the mix within
them, like a class max shared by the classes that use the dimension, and the reason names the
limit when it moved the mix ("quota q: h100/nvidia.com/gpu 6/6, serving on l4 ...").

Learned capacity: `learn_class_rps` generalises core.capacity.learn_rps to one figure per class,
from the rate each class's serving replicas carried while busy.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp  # type: ignore[import-untyped]

from gpufleet.core.capacity import LEARN_ALPHA, LEARN_QUEUE_BAND, MIN_LEARNED_RPS
from gpufleet.core.spotback import backoff

# A new replica is charged this many hours of its price on top (about a cold start): a mix that
# saves less than that is not worth starting pods for. Small enough never to decide feasibility.
START_COST_H = 0.05
# A millionth of a request/s is not capacity: needs are met to this (and the solver's tolerance).
_EPS = 1e-6


@dataclass(frozen=True, slots=True)
class GpuClass:
    """One capacity class, as the core needs it (prices and capacity already resolved)."""

    name: str
    price_per_hour: float  # one replica-hour (all its GPUs or its slice)
    rps_per_replica: float  # requests/s one replica is planned to serve (set or learned, x utilisation)
    spot: bool = False
    min: int = 0
    max: int = 10000
    max_share: float = 1.0  # most of the fleet's planned capacity on this class
    pending_timeout_s: float = 120.0
    return_after_s: float = 600.0
    resources: Mapping[str, int] = field(default_factory=dict)  # e.g. {"nvidia.com/mig-3g.40gb": 1}

    @property
    def cost_per_rps(self) -> float:
        """Price per hour of one request/s of capacity: what 'cheapest per request' compares."""
        return self.price_per_hour / self.rps_per_replica if self.rps_per_replica > 0 else math.inf


@dataclass(frozen=True, slots=True)
class Limit:
    """At most `cap` units of one dimension for the mix: sum over classes of replicas x `use`."""

    label: str  # e.g. "quota q: h100/nvidia.com/gpu"
    cap: float
    use: Mapping[str, float]  # units one replica of each class holds (missing: none)

    def used(self, replicas: Mapping[str, int]) -> float:
        return sum(n * self.use.get(name, 0.0) for name, n in replicas.items())


class State(str, Enum):
    available = "available"
    stocked_out = "stocked-out"  # the signal is on now
    backing_off = "backing-off"  # the signal cleared; waiting out the hysteresis


@dataclass(frozen=True, slots=True)
class Signal:
    """What the fleet saw of one class this tick."""

    pending_past_timeout: int = 0  # its pods Pending longer than its pendingTimeoutSeconds
    interrupted: int = 0  # its replicas with an interruption notice
    no_nodes: bool = False  # no node of its product exists or can be provisioned

    @property
    def raw(self) -> bool:
        return self.pending_past_timeout > 0 or self.interrupted > 0 or self.no_nodes

    def cause(self, cls: GpuClass) -> str:
        parts = []
        if self.pending_past_timeout:
            parts.append(f"{self.pending_past_timeout} pod(s) Pending past {cls.pending_timeout_s:.0f}s")
        if self.interrupted:
            parts.append(f"{self.interrupted} interruption notice(s)")
        if self.no_nodes:
            parts.append("no nodes of its product")
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class Availability:
    """One class's availability and back-off memory (carried from tick to tick by the caller)."""

    state: State = State.available
    since: float | None = None  # when the current outage began
    retry_at: float | None = None
    backoff_s: float = 0.0
    outage_at: float | None = None
    cause: str = ""

    @property
    def usable(self) -> bool:
        return self.state == State.available

    def describe(self, now: float) -> str:
        if self.state == State.stocked_out:
            return f"stocked out ({self.cause})" if self.cause else "stocked out"
        if self.state == State.backing_off and self.retry_at is not None:
            return f"backing off, retried in {max(self.retry_at - now, 0):.0f}s (after {self.cause or 'an outage'})"
        return "available"


def track(cls: GpuClass, signal: Signal, prev: Availability, now: float) -> Availability:
    """The class's availability now: unavailable at once on a signal, back after the back-off."""
    b = backoff(cls.return_after_s, raw_unavailable=signal.raw, retry_at=prev.retry_at,
                backoff_s=prev.backoff_s, outage_at=prev.outage_at, now=now, what=cls.name)
    if signal.raw:
        since = prev.since if prev.state != State.available and prev.since is not None else now
        return Availability(State.stocked_out, since, b.retry_at, b.backoff_s, b.outage_at, signal.cause(cls))
    if b.unavailable:
        return Availability(State.backing_off, prev.since, b.retry_at, b.backoff_s, b.outage_at, prev.cause)
    return Availability(State.available, None, b.retry_at, b.backoff_s, b.outage_at, "")


@dataclass(frozen=True, slots=True)
class Mix:
    replicas: dict[str, int]
    capacity_rps: float
    cost_per_hour: float
    feasible: bool  # the need is met
    reasons: dict[str, str]  # per class: why it has what it has
    note: str  # one line for status and Events

    @property
    def cost_per_rps(self) -> float:
        return self.cost_per_hour / self.capacity_rps if self.capacity_rps > 0 else math.inf


def _solve(
    classes: Sequence[GpuClass],
    lo: np.ndarray,
    hi: np.ndarray,
    need: float,
    spot_max_share: float,
    current: np.ndarray,
    *,
    maximise: bool = False,
    shared: tuple[tuple[tuple[float, ...], float], ...] = (),
) -> np.ndarray | None:
    """min sum(price*n) + start cost, s.t. capacity >= need, limits and shares; None if infeasible.
    With `maximise`: the most capacity the limits allow (cost as a tie-break). `shared`: rows
    sum(use_i * n_i) <= cap (Limit, in the classes' order).

    Memoised on exactly the numbers the program is built from: a service decides every few seconds
    with the same classes and, most of the time, the same need, and one solve (scipy's MILP) costs
    milliseconds where the rest of a decision costs a tenth of one."""
    shape = tuple((c.rps_per_replica, c.price_per_hour, c.spot, c.max_share) for c in classes)
    x = _solve_memo(shape, tuple(lo.tolist()), tuple(hi.tolist()), need, spot_max_share,
                    tuple(current.tolist()), maximise, shared)
    return None if x is None else np.array(x, dtype=int)


@functools.lru_cache(maxsize=4096)
def _solve_memo(
    shape: tuple[tuple[float, float, bool, float], ...],
    lo_t: tuple[float, ...],
    hi_t: tuple[float, ...],
    need: float,
    spot_max_share: float,
    current_t: tuple[float, ...],
    maximise: bool,
    shared: tuple[tuple[tuple[float, ...], float], ...] = (),
) -> tuple[int, ...] | None:
    k = len(shape)
    if k == 1 and not shared and not maximise and shape[0][3] >= 1.0 and not (shape[0][2] and spot_max_share < 1.0):
        # One class and no share to keep (a single-type fleet): the fewest replicas that meet the
        # need, within its bounds; what the program gives, without a solver call.
        cap1 = shape[0][0]
        n1 = max(lo_t[0], float(math.ceil((need - _EPS) / cap1 - 1e-9)) if need > _EPS else 0.0)
        return (int(n1),) if n1 <= hi_t[0] else None
    lo, hi, current = np.array(lo_t), np.array(hi_t), np.array(current_t)
    cap = np.array([s[0] for s in shape], dtype=float)
    price = np.array([s[1] for s in shape], dtype=float)
    # Variables: n (k replica counts), u (k new replicas beyond `current`).
    rows, lbs, ubs = [], [], []
    if not maximise:
        rows.append(np.concatenate([cap, np.zeros(k)]))
        lbs.append(need - _EPS)
        ubs.append(np.inf)
    for i, (_, _, _, max_share) in enumerate(shape):
        if max_share < 1.0:  # cap_i n_i <= share * sum cap n
            row = -max_share * cap
            row[i] += cap[i]
            rows.append(np.concatenate([row, np.zeros(k)]))
            lbs.append(-np.inf)
            ubs.append(_EPS)
        u = np.zeros(2 * k)  # u_i >= n_i - current_i
        u[i], u[k + i] = 1.0, -1.0
        rows.append(u)
        lbs.append(-np.inf)
        ubs.append(current[i])
    for use, cap_d in shared:  # a quota's dimension held by several classes together
        rows.append(np.concatenate([np.array(use, dtype=float), np.zeros(k)]))
        lbs.append(-np.inf)
        ubs.append(cap_d + _EPS)
    spot = np.array([1.0 if s[2] else 0.0 for s in shape])
    if spot.any() and spot_max_share < 1.0:
        rows.append(np.concatenate([cap * spot - spot_max_share * cap, np.zeros(k)]))
        lbs.append(-np.inf)
        ubs.append(_EPS)
    obj = np.concatenate([price, price * START_COST_H])
    if maximise:  # capacity first; cost (< one replica's capacity in weight) breaks ties
        scale = float(cap.min()) / max(float(obj.sum()) * float(hi.max() + 1), 1.0)
        obj = np.concatenate([-cap, np.zeros(k)]) + obj * scale
    res = milp(
        c=obj,
        constraints=[LinearConstraint(np.array(rows), np.array(lbs), np.array(ubs))],
        integrality=np.ones(2 * k),
        bounds=Bounds(np.concatenate([lo, np.zeros(k)]), np.concatenate([hi, hi])),
        options={"mip_rel_gap": 0.0, "presolve": True},
    )
    if res.status != 0 or res.x is None:
        return None
    return tuple(int(v) for v in np.round(res.x[:k]))


def need_in_rps(replicas: int, reference: GpuClass) -> float:
    """A need given as replicas of a reference class (what core.capacity sizes today), in the
    requests/s `choose` takes: the planned capacity of that many reference replicas."""
    return max(replicas, 0) * reference.rps_per_replica


def _fmt(n: Mapping[str, int]) -> str:
    parts = [f"{v} x {k}" for k, v in n.items() if v > 0]
    return " + ".join(parts) if parts else "none"


def choose(
    classes: Sequence[GpuClass],
    need_rps: float,
    availability: Mapping[str, Availability] | None = None,
    *,
    ready: Mapping[str, int] | None = None,
    current: Mapping[str, int] | None = None,
    spot_max_share: float = 1.0,
    now: float = 0.0,
    limits: Sequence[Limit] = (),
) -> Mix:
    """The cheapest replicas per class whose planned capacity meets `need_rps`.

    `availability`: per class (missing: available). A class not available gets no new replicas:
    at most its `ready` ones stay, and its min does not bind. `current`: replicas each class has
    now (for the start cost). `limits`: dimensions the classes share under a cap (a quota); a
    class min that a limit cannot hold gives way to it. When the need cannot be met, the most
    capacity the limits allow.
    """
    avail = availability or {}
    ready = ready or {}
    cur = current or {}
    names = [c.name for c in classes]
    if len(set(names)) != len(names):
        raise ValueError(f"capacity class names must be unique: {names}")
    usable = [avail.get(c.name, Availability()).usable and c.rps_per_replica > 0 for c in classes]
    hi = np.array([min(c.max, 10000) if ok else min(ready.get(c.name, 0), c.max) for c, ok in zip(classes, usable)],
                  dtype=float)
    lo = np.array([min(c.min, c.max) if ok else 0 for c, ok in zip(classes, usable)], dtype=float)
    current_v = np.array([float(cur.get(c.name, 0)) for c in classes])
    shared: list[tuple[tuple[float, ...], float]] = []
    for lim in limits:
        use = [max(float(lim.use.get(c.name, 0.0)), 0.0) for c in classes]
        on = [i for i, u in enumerate(use) if u > 0]
        if len(on) == 1:  # one class on the dimension: a bound on it (keeps the closed form)
            i = on[0]
            hi[i] = min(hi[i], math.floor(max(lim.cap, 0.0) / use[i] + 1e-9))
        elif on:
            shared.append((tuple(use), max(float(lim.cap), 0.0)))
    lo = np.minimum(lo, hi)
    rows = tuple(shared)
    need = max(float(need_rps), 0.0) if math.isfinite(need_rps) else math.inf
    x = _solve(classes, lo, hi, need, spot_max_share, current_v, shared=rows) if math.isfinite(need) else None
    feasible = x is not None
    if x is None:
        x = _solve(classes, lo, hi, 0.0, spot_max_share, current_v, maximise=True, shared=rows)
    if x is None and rows:  # the floors break a shared limit: floors are dropped, the limit holds
        x = _solve(classes, np.zeros(len(classes)), hi, 0.0, spot_max_share, current_v, maximise=True,
                   shared=rows)
    if x is None:  # the floors themselves break a share: floors only, shares ignored
        x = lo.astype(int)
    replicas = {c.name: int(v) for c, v in zip(classes, x)}
    capacity = float(sum(c.rps_per_replica * replicas[c.name] for c in classes))
    cost = float(sum(c.price_per_hour * replicas[c.name] for c in classes))
    reasons = _reasons(classes, replicas, avail, ready, now)
    note = _note(classes, replicas, need, capacity, cost, feasible, avail, ready, spot_max_share, now)
    if limits:
        note = _limited(classes, replicas, need, avail, ready, current, spot_max_share, now, limits, reasons, note)
    return Mix(replicas, capacity, cost, feasible, reasons, note)


def _full(lim: Limit, classes: Sequence[GpuClass], replicas: Mapping[str, int]) -> bool:
    """No replica of a class using the dimension fits under the cap any more."""
    used = lim.used(replicas)
    return any(u > 0 for u in lim.use.values()) and all(
        used + lim.use.get(c.name, 0.0) > lim.cap + _EPS for c in classes if lim.use.get(c.name, 0.0) > 0)


def _limited(classes: Sequence[GpuClass], replicas: Mapping[str, int], need: float,
             avail: Mapping[str, Availability], ready: Mapping[str, int], current: Mapping[str, int] | None,
             spot_max_share: float, now: float, limits: Sequence[Limit], reasons: dict[str, str], note: str) -> str:
    """Name the limits that moved the mix: what the mix would be without them, what it runs on."""
    free = choose(classes, need, avail, ready=ready, current=current, spot_max_share=spot_max_share, now=now)
    held = [c for c in classes if free.replicas[c.name] > replicas[c.name]]
    if not held:
        return note
    binding = [lim for lim in limits if _full(lim, classes, replicas)
               and any(lim.use.get(c.name, 0.0) > 0 for c in held)]
    if not binding:
        return note
    by_name = {c.name: c for c in classes}
    grown = [n for n in replicas if replicas[n] > free.replicas.get(n, 0)]
    what = ", ".join(f"{lim.label} {lim.used(replicas):g}/{lim.cap:g}" for lim in binding)
    for c in held:
        reasons[c.name] = f"{replicas[c.name]} (held by {what}; {free.replicas[c.name]} wanted)"
    if grown:
        sub = max(grown, key=lambda n: (replicas[n] - free.replicas.get(n, 0)) * by_name[n].rps_per_replica)
        head = f"{what}, serving on {sub}"
        base = by_name[held[0].name]
        if base.cost_per_rps > 0 and math.isfinite(base.cost_per_rps):
            head += f" at {by_name[sub].cost_per_rps / base.cost_per_rps:.1f}x the cost per request"
    else:
        head = f"{what}: {', '.join(c.name for c in held)} held below the mix"
    return f"{head}: {note}"


def _reasons(classes: Sequence[GpuClass], replicas: Mapping[str, int], avail: Mapping[str, Availability],
             ready: Mapping[str, int], now: float) -> dict[str, str]:
    out = {}
    for c in classes:
        a = avail.get(c.name, Availability())
        n = replicas[c.name]
        if not a.usable:
            kept = f", {n} Ready kept" if n else ""
            out[c.name] = f"{a.describe(now)}: no new replicas{kept}"
        elif n == 0:
            out[c.name] = f"unused: {c.cost_per_rps:.4g}/h per rps"
        elif n == c.min and c.min > 0:
            out[c.name] = f"{n} (its min)"
        elif n == c.max:
            out[c.name] = f"{n} (its max)"
        else:
            out[c.name] = f"{n} at {c.cost_per_rps:.4g}/h per rps"
    return out


def _note(classes: Sequence[GpuClass], replicas: Mapping[str, int], need: float, capacity: float, cost: float,
          feasible: bool, avail: Mapping[str, Availability], ready: Mapping[str, int], spot_max_share: float,
          now: float) -> str:
    mix = _fmt(replicas)
    head = (f"{mix} for {need:.1f} rps ({capacity:.1f} rps planned, {cost:.2f}/h)" if feasible else
            f"need {need:.1f} rps exceeds what the classes can serve now: {mix} ({capacity:.1f} rps, {cost:.2f}/h)")
    out_classes = [c for c in classes if not avail.get(c.name, Availability()).usable]
    if not out_classes or not math.isfinite(need):
        return head
    # What the mix would be with every class available: name the class it had to leave.
    free = choose(classes, need, None, ready=ready, spot_max_share=spot_max_share, now=now)
    by_name = {c.name: c for c in classes}
    missing = [c for c in out_classes if free.replicas[c.name] > replicas[c.name]]
    if not missing:
        return head + "; " + "; ".join(f"{c.name} {avail[c.name].describe(now)}" for c in out_classes)
    added = [(replicas[n] - free.replicas.get(n, 0)) * by_name[n].rps_per_replica for n in replicas]
    sub = max(zip(added, replicas), key=lambda t: t[0])[1]
    parts = []
    for c in missing:
        ratio = by_name[sub].cost_per_rps / c.cost_per_rps if c.cost_per_rps > 0 else math.inf
        parts.append(f"{c.name} {avail[c.name].describe(now)}, serving on {sub} at {ratio:.1f}x the cost per request")
    return "; ".join(parts) + f": {head}"


# ---------------------------------------------------------------------------------------------
# Learned capacity per class.


def learn_class_rps(
    classes: Sequence[GpuClass],
    learned: Mapping[str, float],
    *,
    rate_by_class: Mapping[str, float],
    serving_by_class: Mapping[str, int],
    queue_per_replica_ratio: float | None,
    latency_ok: bool,
) -> dict[str, float]:
    """Requests/s per serving replica, learned per class from samples where replicas were busy.

    The same rule as core.capacity.learn_rps, class by class: a sample counts only while the
    queue per replica is near its target (`queue_per_replica_ratio`, the queue per serving
    replica over queueDepthPerReplica, within LEARN_QUEUE_BAND) and the latency SLO held;
    otherwise the rate per replica measures idleness, not capacity. `rate_by_class`: the rate
    the class's serving pods carried (from per-pod counters).
    """
    out = dict(learned)
    if not latency_ok or queue_per_replica_ratio is None:
        return out
    if not LEARN_QUEUE_BAND[0] <= queue_per_replica_ratio <= LEARN_QUEUE_BAND[1]:
        return out
    for c in classes:
        n = serving_by_class.get(c.name, 0)
        rate = rate_by_class.get(c.name)
        if n <= 0 or rate is None or not math.isfinite(rate) or rate <= 0:
            continue
        sample = rate / n
        if sample < MIN_LEARNED_RPS:
            continue
        prev = out.get(c.name)
        out[c.name] = sample if prev is None else (1 - LEARN_ALPHA) * prev + LEARN_ALPHA * sample
    return out
