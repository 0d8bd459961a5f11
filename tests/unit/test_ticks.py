"""The tick scheduler: many service loops on a bounded pool, deadlines, no starvation, clean stop;
wake-ups between ticks (a pod turned Ready) that run a reroute, debounced, never beside the tick."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable

from gpufleet import ticks


class Stop:
    def __init__(self) -> None:
        self.flag = False

    def __call__(self) -> bool:
        return self.flag


async def run_until(predicate: object, loops: list[asyncio.Task[None]], stop: Stop, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)
    stop.flag = True
    await asyncio.wait_for(asyncio.gather(*loops), timeout=5)


def test_fifty_loops_share_four_workers_and_all_tick() -> None:
    pool = ticks.TickPool(workers=4)
    counts: Counter[int] = Counter()
    running = 0
    peak = 0
    lock = threading.Lock()

    def tick(i: int) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.005)
        with lock:
            running -= 1
            counts[i] += 1

    async def main() -> None:
        stop = Stop()
        loops = [asyncio.create_task(ticks.run_loop(
            pool, name=f"s{i}", tick=lambda i=i: tick(i), interval=lambda: 0.1, sleep=asyncio.sleep, stopped=stop))
            for i in range(50)]
        await run_until(lambda: len(counts) == 50 and min(counts.values()) >= 3, loops, stop, timeout=20)

    try:
        asyncio.run(main())
    finally:
        pool.shutdown()
    assert peak <= 4
    assert threading.active_count() < 20  # threads do not grow with the number of services


def test_a_hung_tick_does_not_starve_the_others_and_is_skipped_not_stacked() -> None:
    pool = ticks.TickPool(workers=2)
    release = threading.Event()
    counts: Counter[str] = Counter()
    hung_started = 0

    def hung() -> None:
        nonlocal hung_started
        hung_started += 1
        release.wait(10)

    def fine() -> None:
        counts["fine"] += 1

    skipped_before = ticks.TICK_OVERRUNS.labels(result="skipped")._value.get()

    async def main() -> None:
        stop = Stop()
        loops = [
            asyncio.create_task(ticks.run_loop(pool, name="hung", tick=hung, interval=lambda: 0.05,
                                               sleep=asyncio.sleep, stopped=stop)),
            asyncio.create_task(ticks.run_loop(pool, name="fine", tick=fine, interval=lambda: 0.05,
                                               sleep=asyncio.sleep, stopped=stop)),
        ]
        await run_until(lambda: counts["fine"] >= 20, loops, stop, timeout=20)

    try:
        asyncio.run(main())
    finally:
        release.set()
        pool.shutdown()
    # The hung service held one worker, once: its later due ticks were skipped, not queued.
    assert hung_started == 1
    assert ticks.TICK_OVERRUNS.labels(result="skipped")._value.get() > skipped_before


def test_a_failing_tick_does_not_end_the_loop() -> None:
    pool = ticks.TickPool(workers=1)
    calls = 0

    def boom() -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("API server said no")

    async def main() -> None:
        stop = Stop()
        loop = asyncio.create_task(ticks.run_loop(pool, name="boom", tick=boom, interval=lambda: 0.02,
                                                  sleep=asyncio.sleep, stopped=stop))
        await run_until(lambda: calls >= 3, [loop], stop, timeout=10)

    try:
        asyncio.run(main())
    finally:
        pool.shutdown()
    assert calls >= 3


def test_intervals_are_jittered_within_bounds() -> None:
    pool = ticks.TickPool(jitter=0.1)
    draws = [pool.next_interval(10.0) for _ in range(500)]
    assert all(9.0 <= d <= 11.0 for d in draws)
    assert max(draws) - min(draws) > 1.0  # not one fixed period: services created together spread out


class Stopping:
    """kopf's stopped.wait for the tests: a sleep that returns as soon as the loop is stopped."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def __call__(self) -> bool:
        return self.event.is_set()

    async def sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.event.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass


async def until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


LONG = 10.0  # the interval: the next tick is never due while these tests run


def test_a_wake_runs_reroute_on_the_pool_long_before_the_next_tick() -> None:
    pool = ticks.TickPool(workers=2)
    calls: list[tuple[str, float, str]] = []  # (what, when, thread)

    def record(what: str) -> None:
        calls.append((what, time.monotonic(), threading.current_thread().name))

    async def main() -> None:
        stop, wake = Stopping(), asyncio.Event()
        loop = asyncio.create_task(ticks.run_loop(
            pool, name="svc", tick=lambda: record("tick"), interval=lambda: LONG, sleep=stop.sleep, stopped=stop,
            wake=wake, reroute=lambda: record("reroute"), debounce_s=0.2))
        await until(lambda: calls, timeout=LONG / 10 + 5, what="the first tick")
        woken = time.monotonic()
        wake.set()
        await until(lambda: len(calls) == 2, timeout=5, what="the reroute")
        assert time.monotonic() - woken < 2.0
        stop.event.set()
        await asyncio.wait_for(loop, timeout=5)

    try:
        asyncio.run(main())
    finally:
        pool.shutdown()
    assert [c[0] for c in calls] == ["tick", "reroute"]
    assert calls[1][2].startswith("tick")  # a worker of the shared pool, not kopf's event loop


def test_wakes_within_the_debounce_make_one_reroute() -> None:
    pool = ticks.TickPool(workers=2)
    calls: list[str] = []
    busy = threading.Event()

    def reroute() -> None:
        busy.set()
        calls.append("reroute")
        busy.clear()

    async def main() -> None:
        stop, wake = Stopping(), asyncio.Event()
        loop = asyncio.create_task(ticks.run_loop(
            pool, name="svc", tick=lambda: calls.append("tick"), interval=lambda: LONG, sleep=stop.sleep,
            stopped=stop, wake=wake, reroute=reroute, debounce_s=0.5))
        await until(lambda: calls, timeout=LONG / 10 + 5, what="the first tick")
        for _ in range(5):  # five pods of one rollout turn Ready within 0.2 s
            wake.set()
            await asyncio.sleep(0.04)
        await until(lambda: "reroute" in calls and not wake.is_set() and not busy.is_set(), timeout=5,
                    what="the reroute")
        stop.event.set()
        await asyncio.wait_for(loop, timeout=5)

    try:
        asyncio.run(main())
    finally:
        pool.shutdown()
    assert calls == ["tick", "reroute"]


def test_a_reroute_never_runs_beside_its_services_tick() -> None:
    pool = ticks.TickPool(workers=2)  # room for both at once, were they allowed
    calls: list[str] = []
    tick_running = threading.Event()
    overlapped = threading.Event()
    woken = threading.Event()

    def tick() -> None:
        tick_running.set()
        calls.append("tick")
        if len(calls) == 1:
            # Hold the first tick long past the debounce after the wake, so that a reroute that
            # did not wait for the tick would start now (a fixed window: this proves an absence).
            woken.wait(5)
            time.sleep(0.6)
        tick_running.clear()

    def reroute() -> None:
        if tick_running.is_set():
            overlapped.set()
        calls.append("reroute")

    async def main() -> None:
        stop, wake = Stopping(), asyncio.Event()
        loop = asyncio.create_task(ticks.run_loop(
            pool, name="svc", tick=tick, interval=lambda: LONG, sleep=stop.sleep, stopped=stop,
            wake=wake, reroute=reroute, debounce_s=0.1))
        await until(tick_running.is_set, timeout=LONG / 10 + 5, what="the first tick")
        wake.set()  # a pod turned Ready while the tick runs (after it read the pods)
        woken.set()
        await until(lambda: "reroute" in calls, timeout=5, what="the reroute after the tick")
        stop.event.set()
        await asyncio.wait_for(loop, timeout=5)

    try:
        asyncio.run(main())
    finally:
        pool.shutdown()
    assert calls == ["tick", "reroute"]  # a wake during a tick is still served, after it
    assert not overlapped.is_set()


def test_a_tick_that_overran_is_followed_at_once_when_it_ends_not_at_the_next_slot() -> None:
    # make chaos: a tick held by a slow Prometheus ended just after the fault cleared, and the
    # first decision on fresh data waited for the next slot (up to an interval more).
    pool = ticks.TickPool(workers=2, jitter=0.0)
    period = 1.0
    starts: list[float] = []
    ends: list[float] = []

    def tick() -> None:
        starts.append(time.monotonic())
        if len(starts) == 1:
            time.sleep(2.25)  # a slow call past its deadline; ends between the slots at ~2 s and ~3 s
        ends.append(time.monotonic())

    async def main() -> None:
        stop = Stopping()
        loop = asyncio.create_task(ticks.run_loop(pool, name="svc", tick=tick, interval=lambda: period,
                                                  sleep=stop.sleep, stopped=stop))
        await until(lambda: len(starts) >= 3, timeout=10, what="three ticks")
        stop.event.set()
        await asyncio.wait_for(loop, timeout=5)

    try:
        asyncio.run(main())
    finally:
        pool.shutdown()
    # Waiting for the next slot would put ~0.65-0.75 s between them; the margin is for a loaded machine.
    assert starts[1] - ends[0] < 0.35, f"the tick after the late one came {starts[1] - ends[0]:.2f} s after it ended"
    # and the one after that a period later, not at once again (no burst)
    assert starts[2] - starts[1] >= period * 0.9
