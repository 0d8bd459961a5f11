"""Tick scheduling for many services on a bounded worker pool.

Each InferenceService's loop is a coroutine that sleeps until its next tick is due and then runs
the (blocking) tick on a pool shared by all services, so the number of threads does not grow with
the number of services and kopf's own handlers never wait behind service loops. Ticks are
jittered (services created together do not tick together), have a deadline (a slow service is
given up on for this round; it never holds more than one worker), and their lag (due -> done) is
measured: the figure a platform team watches when it adds services.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from prometheus_client import Counter, Histogram

log = logging.getLogger(__name__)

TICK_LAG = Histogram(
    "gpufleet_tick_lag_seconds",
    "Seconds from when a service's tick was due to when its decision was applied and reported",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
TICK_OVERRUNS = Counter(
    "gpufleet_tick_overruns_total",
    "Ticks that missed their deadline (result: abandoned, the tick was given up on; "
    "skipped, a due tick did not start because the previous one was still running)",
    ["result"],
)


@dataclass
class TickPool:
    """The worker threads all service loops share."""

    workers: int = 8
    jitter: float = 0.1  # each interval is drawn from interval x [1 - jitter, 1 + jitter]
    _executor: ThreadPoolExecutor | None = field(default=None, repr=False)

    def executor(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="tick")
        return self._executor

    def next_interval(self, interval: float) -> float:
        return interval * random.uniform(1.0 - self.jitter, 1.0 + self.jitter)

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


async def run_loop(
    pool: TickPool,
    *,
    name: str,
    tick: Callable[[], None],
    interval: Callable[[], float],
    sleep: Callable[[float], Awaitable[object]],
    stopped: Callable[[], bool],
    clock: Callable[[], float] = time.time,
) -> None:
    """Run `tick` on the pool every `interval()` seconds until `stopped()`.

    `sleep(seconds)` waits and returns early when the loop is asked to stop (kopf's
    `stopped.wait`). The first tick comes within a random tenth of an interval. A tick that runs
    past its deadline (one interval) is abandoned: the loop waits for the next due time and skips
    ticks until the old one has finished (every call inside has a timeout, so it does).
    """
    loop = asyncio.get_running_loop()
    due = clock() + random.uniform(0.0, 0.1 * interval())
    running: Future[None] | None = None
    while not stopped():
        await sleep(max(0.0, due - clock()))
        if stopped():
            break
        period = pool.next_interval(interval())
        if running is not None and not running.done():
            TICK_OVERRUNS.labels(result="skipped").inc()
            log.warning("tick of %s skipped: the previous one is still running", name)
        else:
            # Keep kopf's context (its event posting) in the worker thread.
            context = contextvars.copy_context()
            running = pool.executor().submit(context.run, tick)
            try:
                await asyncio.wait_for(asyncio.wrap_future(running, loop=loop), timeout=period)
                TICK_LAG.observe(max(0.0, clock() - due))
            except asyncio.TimeoutError:
                TICK_OVERRUNS.labels(result="abandoned").inc()
                log.warning("tick of %s ran past its deadline (%.1fs)", name, period)
            except Exception:  # noqa: BLE001 - the tick reports its own errors; the loop goes on
                log.exception("tick of %s failed", name)
        due += period
        if due < clock():  # fell behind (a long tick): start again from now, do not burst
            due = clock() + period * random.uniform(0.0, 0.1)
