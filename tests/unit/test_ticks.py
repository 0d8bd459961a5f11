"""The tick scheduler: many service loops on a bounded pool, deadlines, no starvation, clean stop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter

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
