"""Tick scheduling for many services on a bounded worker pool.

Each InferenceService's loop is a coroutine that sleeps until its next tick is due and then runs
the (blocking) tick on a pool shared by all services, so the number of threads does not grow with
the number of services and kopf's own handlers never wait behind service loops. Ticks are
jittered (services created together do not tick together), have a deadline (a slow service is
given up on for this round; it never holds more than one worker), and their lag (due -> done) is
measured: the figure a platform team watches when it adds services.

A loop that dies (its coroutine raised: an interval that cannot be computed, a pool shut under
it) is restarted by `supervise` after a short, growing, jittered back-off; kopf would restart a
daemon only after its own backoff, and never one that returned.

A loop can also be woken between ticks (an asyncio.Event its service's pod watch sets when a pod
turns Ready): after a short debounce it runs `reroute` on the same pool, never beside its own
tick, so a Ready pod joins the Service without waiting up to an interval for the next tick.
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
REROUTES = Counter(
    "gpufleet_reroutes_total",
    "Wake-ups between ticks (a pod turned Ready) by result: run, the last plan was carried out again; "
    "deferred, the service's tick was due or still running and covers it",
    ["result"],
)
TICK_OVERRUNS = Counter(
    "gpufleet_tick_overruns_total",
    "Ticks that missed their deadline (result: abandoned, the tick was given up on; "
    "skipped, a due tick did not start because the previous one was still running)",
    ["result"],
)


LOOP_RESTARTS = Counter(
    "gpufleet_loop_restarts_total",
    "Service loops restarted after their coroutine died from an unexpected exception",
)


@dataclass
class LoopState:
    """What a service's loop keeps across restarts by `supervise`: the call still on the pool, so
    a restarted loop never starts a tick beside one its previous life left running."""

    running: Future[None] | None = None


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


async def _wait(sleep: Callable[[float], Awaitable[object]], seconds: float, wake: asyncio.Event | None) -> bool:
    """`sleep(seconds)`, cut short when `wake` is set: True when woken."""
    if wake is None:
        await sleep(seconds)
        return False
    if wake.is_set():
        return True

    async def sleeping() -> None:
        await sleep(seconds)  # kopf's stopped.wait() is an awaitable, not a coroutine

    tasks = (asyncio.ensure_future(sleeping()), asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return wake.is_set()


async def _finished(future: Future[None], seconds: float, sleep: Callable[[float], Awaitable[object]]) -> bool:
    """Wait up to `seconds` for a call on the pool to end, cut short when the loop is asked to stop
    (`sleep` returns early then): True when it ended. The call itself is never cancelled."""
    if future.done():
        return True
    done = asyncio.Event()
    loop = asyncio.get_running_loop()

    def ended(_: Future[None]) -> None:  # on the worker thread
        if not loop.is_closed():
            loop.call_soon_threadsafe(done.set)

    future.add_done_callback(ended)
    await _wait(sleep, seconds, done)
    return future.done()


async def run_loop(
    pool: TickPool,
    *,
    name: str,
    tick: Callable[[], None],
    interval: Callable[[], float],
    sleep: Callable[[float], Awaitable[object]],
    stopped: Callable[[], bool],
    clock: Callable[[], float] = time.time,
    wake: asyncio.Event | None = None,
    reroute: Callable[[], None] | None = None,
    debounce_s: float = 0.5,
    state: LoopState | None = None,
) -> None:
    """Run `tick` on the pool every `interval()` seconds until `stopped()`.

    `sleep(seconds)` waits and returns early when the loop is asked to stop (kopf's
    `stopped.wait`). The first tick comes within a random tenth of an interval. A tick that runs
    past its deadline (one interval) is abandoned: at its next due time the loop waits (up to an
    interval at a time, skipping ticks meanwhile) for the old one to finish (every call inside has
    a timeout, so it does) and then ticks at once, a period before the next.

    When `wake` is set (with `reroute` given), the loop waits `debounce_s` more (pods of one
    rollout turn Ready close together), clears it and runs `reroute` on the pool, unless the tick
    is due by then or the previous call is still running: the tick reads fresh state anyway, and
    the wake is cleared as each tick starts. `reroute` has the same deadline as a tick.
    """
    loop = asyncio.get_running_loop()
    wake = wake if reroute is not None else None
    state = state if state is not None else LoopState()
    due = clock() + random.uniform(0.0, 0.1 * interval())

    async def run(call: Callable[[], None], deadline: float, what: str) -> tuple[Future[None], bool]:
        """Run `call` on the pool; the future and whether it finished in time without raising."""
        # Keep kopf's context (its event posting) in the worker thread.
        future = pool.executor().submit(contextvars.copy_context().run, call)
        try:
            await asyncio.wait_for(asyncio.wrap_future(future, loop=loop), timeout=deadline)
            return future, True
        except asyncio.TimeoutError:
            if call is tick:
                TICK_OVERRUNS.labels(result="abandoned").inc()
            log.warning("%s of %s ran past its deadline (%.1fs)", what, name, deadline)
        except Exception:  # noqa: BLE001 - the call reports its own errors; the loop goes on
            log.exception("%s of %s failed", what, name)
        return future, False

    while not stopped():
        if await _wait(sleep, max(0.0, due - clock()), wake):
            await sleep(min(debounce_s, max(0.0, due - clock())))
            if stopped():
                break
            if clock() < due:
                assert wake is not None and reroute is not None
                wake.clear()
                if state.running is not None and not state.running.done():
                    REROUTES.labels(result="deferred").inc()
                else:
                    REROUTES.labels(result="run").inc()
                    state.running, _ = await run(reroute, interval(), "reroute")
                continue
            REROUTES.labels(result="deferred").inc()
        if stopped():
            break
        period = pool.next_interval(interval())
        late = state.running is not None and not state.running.done()
        if late:
            # The previous call overran (a slow Prometheus, an API server restarting): tick as
            # soon as it ends, not a whole period later: what it decided is already old, and
            # what held it may just have cleared (make chaos: the first decision after a slow
            # Prometheus came back waited for the next slot).
            assert state.running is not None
            await _finished(state.running, period, sleep)
            if stopped():
                break
        if state.running is not None and not state.running.done():
            TICK_OVERRUNS.labels(result="skipped").inc()
            log.warning("tick of %s skipped: the previous one is still running", name)
        else:
            slot = due
            if late:
                due = clock()  # the next one a period after this late tick, not after its slot
            if wake is not None:
                wake.clear()  # this tick reads fresh state: it covers every wake so far
            state.running, ok = await run(tick, period, "tick")
            if ok:
                TICK_LAG.observe(max(0.0, clock() - slot))
        due += period
        if due < clock():  # fell behind (a long tick): start again from now, do not burst
            due = clock() + period * random.uniform(0.0, 0.1)


async def supervise(
    start: Callable[[], Awaitable[None]],
    *,
    name: str,
    stopped: Callable[[], bool],
    sleep: Callable[[float], Awaitable[object]],
    clock: Callable[[], float] = time.monotonic,
    base_s: float = 1.0,
    cap_s: float = 60.0,
    healthy_s: float = 600.0,
) -> None:
    """Run `start()` (a service's loop) until `stopped()`; when it dies from an unexpected
    exception, or returns while not asked to stop, log it, count it and start it again after
    base_s, doubling per consecutive death up to cap_s, jittered (x0.5-1); a life of healthy_s
    resets the back-off. Cancellation (kopf stopping the daemon) is never caught."""
    deaths = 0
    while not stopped():
        began = clock()
        try:
            await start()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the loop must come back whatever killed it
            log.exception("the loop of %s died; restarting it", name)
        else:
            if stopped():
                return
            log.error("the loop of %s returned while not stopped; restarting it", name)
        LOOP_RESTARTS.inc()
        deaths = 1 if clock() - began >= healthy_s else deaths + 1
        await sleep(min(cap_s, base_s * 2 ** (deaths - 1)) * random.uniform(0.5, 1.0))
