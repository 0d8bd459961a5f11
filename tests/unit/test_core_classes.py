"""core.classes: the cheapest mix of capacity classes, availability with back-off, learned capacity."""

from __future__ import annotations

import itertools
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from gpufleet.core.classes import (
    Availability,
    GpuClass,
    Limit,
    Signal,
    State,
    choose,
    learn_class_rps,
    need_in_rps,
    track,
)

price = st.floats(min_value=0.05, max_value=50.0, allow_nan=False)
rps = st.floats(min_value=0.1, max_value=40.0, allow_nan=False)


@st.composite
def plain_classes(draw: st.DrawFn, max_n: int = 40) -> list[GpuClass]:
    """Classes without floors or shares: any single one of them is a complete fleet."""
    k = draw(st.integers(1, 4))
    return [GpuClass(f"c{i}", draw(price), draw(rps), max=draw(st.integers(1, max_n))) for i in range(k)]


@st.composite
def limited_classes(draw: st.DrawFn) -> list[GpuClass]:
    k = draw(st.integers(1, 4))
    out = []
    for i in range(k):
        lo = draw(st.integers(0, 3))
        out.append(GpuClass(f"c{i}", draw(price), draw(rps), spot=draw(st.booleans()), min=lo,
                            max=draw(st.integers(max(lo, 1), 30)),
                            max_share=draw(st.sampled_from([1.0, 0.8, 0.5, 0.3]))))
    return out


def total_cap(classes: list[GpuClass], n: dict[str, int]) -> float:
    return sum(c.rps_per_replica * n[c.name] for c in classes)


def total_cost(classes: list[GpuClass], n: dict[str, int]) -> float:
    return sum(c.price_per_hour * n[c.name] for c in classes)


@settings(max_examples=150, deadline=None)
@given(plain_classes(), st.floats(min_value=0.0, max_value=1.0))
def test_meets_the_need_when_feasible(classes: list[GpuClass], frac: float) -> None:
    need = frac * sum(c.max * c.rps_per_replica for c in classes)
    mix = choose(classes, need)
    assert mix.feasible
    assert mix.capacity_rps >= need - 2e-6
    assert math.isclose(mix.capacity_rps, total_cap(classes, mix.replicas))


@settings(max_examples=150, deadline=None)
@given(plain_classes(), st.floats(min_value=0.0, max_value=1.0))
def test_cost_not_above_any_single_feasible_class(classes: list[GpuClass], frac: float) -> None:
    need = frac * max(c.max * c.rps_per_replica for c in classes)
    mix = choose(classes, need)
    for c in classes:
        n = math.ceil(need / c.rps_per_replica - 1e-9)
        if n <= c.max:
            assert mix.cost_per_hour <= n * c.price_per_hour + 2e-6, (c, n, mix)


@settings(max_examples=60, deadline=None)
@given(plain_classes(max_n=5), st.floats(min_value=0.0, max_value=1.0))
def test_optimal_against_brute_force(classes: list[GpuClass], frac: float) -> None:
    need = frac * sum(c.max * c.rps_per_replica for c in classes)
    best = math.inf
    for combo in itertools.product(*[range(c.max + 1) for c in classes]):
        # Met as the core meets a need: to a millionth of a request/s (classes._EPS).
        if sum(n * c.rps_per_replica for n, c in zip(combo, classes)) >= need - 1e-6:
            best = min(best, sum(n * c.price_per_hour for n, c in zip(combo, classes)))
    assert math.isclose(choose(classes, need).cost_per_hour, best, rel_tol=2e-6, abs_tol=2e-6)


@settings(max_examples=150, deadline=None)
@given(limited_classes(), st.floats(min_value=0.0, max_value=400.0), st.sampled_from([1.0, 0.7, 0.5]))
def test_respects_limits_and_shares(classes: list[GpuClass], need: float, spot_share: float) -> None:
    mix = choose(classes, need, spot_max_share=spot_share)
    cap = total_cap(classes, mix.replicas)
    spot_cap = 0.0
    for c in classes:
        n = mix.replicas[c.name]
        assert c.min <= n <= c.max or not mix.feasible and n <= c.max
        if mix.feasible:
            assert c.rps_per_replica * n <= c.max_share * cap + 2e-6
        spot_cap += c.rps_per_replica * n if c.spot else 0.0
    if mix.feasible:
        assert spot_cap <= spot_share * cap + 2e-6
        assert cap >= need - 2e-6


@settings(max_examples=100, deadline=None)
@given(limited_classes(), st.floats(min_value=0.0, max_value=200.0), st.floats(min_value=0.0, max_value=200.0))
def test_monotone_in_need(classes: list[GpuClass], a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    m_lo, m_hi = choose(classes, lo), choose(classes, hi)
    if m_hi.feasible:
        assert m_lo.feasible
        assert m_lo.cost_per_hour <= m_hi.cost_per_hour + 2e-6


@settings(max_examples=150, deadline=None)
@given(limited_classes(), st.floats(min_value=0.0, max_value=200.0), st.data())
def test_never_adds_to_a_class_that_cannot_be_had(classes: list[GpuClass], need: float, data: st.DataObject) -> None:
    out = data.draw(st.sets(st.sampled_from([c.name for c in classes])))
    ready = {n: data.draw(st.integers(0, 5)) for n in out}
    avail = {n: Availability(State.stocked_out, 0.0, 600.0, 600.0, 0.0, "test") for n in out}
    mix = choose(classes, need, avail, ready=ready)
    for n in out:
        assert mix.replicas[n] <= ready[n]
        assert "no new replicas" in mix.reasons[n]


def test_margin_uses_the_small_class_not_another_large_one() -> None:
    # 11 rps: a second H100 costs 3.00, one L4 0.75: greedy-by-cost-per-request buys the H100.
    classes = [GpuClass("h100", 3.0, 10.0), GpuClass("l4", 0.75, 1.0)]
    mix = choose(classes, 11.0)
    assert mix.replicas == {"h100": 1, "l4": 1}
    assert math.isclose(mix.cost_per_hour, 3.75)


def test_stock_out_falls_back_to_next_cheapest_with_a_reason() -> None:
    classes = [GpuClass("l4", 0.75, 1.0), GpuClass("a100", 3.67, 2.6), GpuClass("h100", 6.0, 3.0)]
    free = choose(classes, 6.0)
    assert free.replicas == {"l4": 6, "a100": 0, "h100": 0}
    avail = {"l4": track(classes[0], Signal(pending_past_timeout=2), Availability(), 100.0)}
    mix = choose(classes, 6.0, avail, ready={"l4": 1}, now=100.0)
    assert mix.replicas == {"l4": 1, "a100": 2, "h100": 0}  # the Ready l4 stays: it is the cheapest
    assert mix.feasible and mix.capacity_rps >= 6.0
    # a100's cost per request over l4's: (3.67 / 2.6) / 0.75 = 1.88
    assert "l4 stocked out (2 pod(s) Pending past 120s), serving on a100 at 1.9x the cost per request" in mix.note


def test_infeasible_need_gives_the_most_capacity() -> None:
    classes = [GpuClass("a", 1.0, 2.0, max=3), GpuClass("b", 5.0, 1.0, max=2)]
    mix = choose(classes, 100.0)
    assert not mix.feasible
    assert mix.replicas == {"a": 3, "b": 2}
    assert "exceeds" in mix.note


def test_start_cost_keeps_an_equal_cost_mix() -> None:
    # Two classes of equal cost per request: the one already running keeps the load.
    classes = [GpuClass("a", 2.0, 2.0), GpuClass("b", 1.0, 1.0)]
    assert choose(classes, 4.0, current={"b": 4}).replicas == {"a": 0, "b": 4}
    assert choose(classes, 4.0, current={"a": 2}).replicas == {"a": 2, "b": 0}


def test_duplicate_names_refused() -> None:
    try:
        choose([GpuClass("a", 1.0, 1.0), GpuClass("a", 2.0, 1.0)], 1.0)
    except ValueError as exc:
        assert "unique" in str(exc)
    else:
        raise AssertionError("duplicate names accepted")


def test_track_hysteresis_and_exponential_backoff() -> None:
    c = GpuClass("l4", 0.75, 1.0, return_after_s=600.0)
    a = track(c, Signal(pending_past_timeout=1), Availability(), 0.0)
    assert a.state == State.stocked_out and not a.usable and a.since == 0.0
    a = track(c, Signal(), a, 10.0)  # the Pending pods were retired: signal clears, still backing off
    assert a.state == State.backing_off and not a.usable
    assert "backing off" in a.describe(10.0)
    a = track(c, Signal(), a, 599.0)
    assert not a.usable
    a = track(c, Signal(), a, 601.0)
    assert a.usable and a.state == State.available
    # A new outage right after the return waits twice as long.
    a = track(c, Signal(no_nodes=True), a, 700.0)
    assert a.backoff_s == 1200.0 and "no nodes" in a.cause
    a = track(c, Signal(), a, 710.0)
    assert not track(c, Signal(), a, 1890.0).usable
    assert track(c, Signal(), a, 1901.0).usable


@settings(max_examples=100, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=40), st.floats(min_value=0.0, max_value=900.0))
def test_never_usable_while_the_signal_is_on(signals: list[bool], base: float) -> None:
    c = GpuClass("x", 1.0, 1.0, return_after_s=base)
    a = Availability()
    for i, on in enumerate(signals):
        a = track(c, Signal(interrupted=int(on)), a, 10.0 * i)
        if on:
            assert not a.usable


def test_learned_capacity_per_class() -> None:
    classes = [GpuClass("h100", 3.0, 10.0), GpuClass("l4", 0.75, 1.0)]
    learned = learn_class_rps(classes, {}, rate_by_class={"h100": 40.0, "l4": 3.0},
                              serving_by_class={"h100": 4, "l4": 3}, queue_per_replica_ratio=1.0, latency_ok=True)
    assert learned == {"h100": 10.0, "l4": 1.0}
    again = learn_class_rps(classes, learned, rate_by_class={"h100": 60.0}, serving_by_class={"h100": 4, "l4": 3},
                            queue_per_replica_ratio=1.2, latency_ok=True)
    assert math.isclose(again["h100"], 0.8 * 10.0 + 0.2 * 15.0) and again["l4"] == 1.0
    # Idle (queue far below target) or latency breached: no sample.
    for ratio, ok in ((0.1, True), (1.0, False), (None, True)):
        assert learn_class_rps(classes, learned, rate_by_class={"h100": 1.0}, serving_by_class={"h100": 4},
                               queue_per_replica_ratio=ratio, latency_ok=ok) == learned


def test_need_as_replicas_of_a_reference_class() -> None:
    h100, mig = GpuClass("h100", 3.0, 10.0), GpuClass("mig", 1.5, 4.0)
    # "7 H100s' worth" is 70 rps: 7 H100 at 21.00, or 6 H100 and 3 slices at 22.50: the H100s win.
    mix = choose([h100, mig], need_in_rps(7, h100))
    assert mix.replicas == {"h100": 7, "mig": 0}
    # One slice's worth (4 rps): one slice at 1.50, not an H100 at 3.00.
    assert choose([h100, mig], need_in_rps(1, mig)).replicas == {"h100": 0, "mig": 1}
    assert need_in_rps(-1, h100) == 0.0


def test_a_repeated_decision_reuses_the_solve_and_gets_the_same_mix() -> None:
    # A service decides every few seconds on the same classes and mostly the same need: the MILP
    # (milliseconds) is solved once per distinct program, and the memo answers exactly as a solve.
    from gpufleet.core import classes as core_classes

    fleet = [GpuClass("h100", 3.0, 13.6), GpuClass("l4", 0.75, 2.5), GpuClass("l4-spot", 0.3, 2.5, spot=True)]
    first = choose(fleet, 40.0, spot_max_share=0.5)
    before = core_classes._solve_memo.cache_info()
    again = choose(fleet, 40.0, spot_max_share=0.5)
    after = core_classes._solve_memo.cache_info()
    assert again.replicas == first.replicas and again.cost_per_hour == first.cost_per_hour
    assert after.hits == before.hits + 1 and after.misses == before.misses
    # Another need is another program: solved, and the same as the uncached solve gives.
    other = choose(fleet, 55.0, spot_max_share=0.5)
    assert core_classes._solve_memo.cache_info().misses == after.misses + 1
    assert other.capacity_rps >= 55.0 - 1e-6


# -- shared limits (a GPUQuota's dimensions) ------------------------------------------------------


@st.composite
def shared_limits(draw: st.DrawFn, classes: list[GpuClass]) -> list[Limit]:
    """One or two dimensions, each used by some of the classes (a GPU product's pool, cost)."""
    out = []
    for d in range(draw(st.integers(1, 2))):
        use = {c.name: float(draw(st.sampled_from([0, 0, 1, 2, 8]))) for c in classes}
        out.append(Limit(f"quota q: d{d}", float(draw(st.integers(0, 30))), use))
    return out


@settings(max_examples=150, deadline=None)
@given(data=st.data(), need=st.floats(0.0, 400.0))
def test_the_mix_never_holds_more_than_a_shared_limit(data: st.DataObject, need: float) -> None:
    classes = data.draw(plain_classes())
    limits = data.draw(shared_limits(classes))
    mix = choose(classes, need, limits=limits)
    for lim in limits:
        assert lim.used(mix.replicas) <= lim.cap + 1e-6, (lim, mix.replicas)
    if mix.feasible:
        assert mix.capacity_rps >= need - 1e-6
    # A limit that cannot bind changes nothing.
    loose = [Limit(lim.label, 1e9, lim.use) for lim in limits]
    assert choose(classes, need, limits=loose).replicas == choose(classes, need).replicas


def test_a_full_product_is_named_with_the_class_it_moved_to() -> None:
    h100 = GpuClass("h100", 3.0, 13.6)
    l4 = GpuClass("l4", 1.2, 4.0)
    pool = Limit("quota q: h100/nvidia.com/gpu", 4.0, {"h100": 1.0})
    mix = choose([h100, l4], 100.0, limits=[pool])
    assert mix.replicas == {"h100": 4, "l4": 12} and mix.feasible
    assert mix.note.startswith("quota q: h100/nvidia.com/gpu 4/4, serving on l4 at 1.4x the cost per request: ")
    assert mix.reasons["h100"] == "4 (held by quota q: h100/nvidia.com/gpu 4/4; 7 wanted)"
    # Two classes on one product share its limit (an on-demand and a spot H100).
    spot = GpuClass("h100-spot", 2.25, 13.6, spot=True)
    both = Limit("quota q: h100/nvidia.com/gpu", 4.0, {"h100": 1.0, "h100-spot": 1.0})
    mix = choose([h100, spot, l4], 100.0, limits=[both], spot_max_share=0.7)
    assert mix.replicas["h100"] + mix.replicas["h100-spot"] <= 4 and mix.capacity_rps >= 100.0
