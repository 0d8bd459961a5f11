"""409, 429 and 5xx answers from the API server, and dropped connections, are retried with back-off
and jitter within one request's timeout budget (adapters.kube.with_retries); a service's loop
that dies is started again (ticks.supervise)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import MaxRetryError, ReadTimeoutError

from gpufleet import ticks
from gpufleet.adapters import kube as kube_module
from gpufleet.adapters.kube import Kube, with_retries


class Clock:
    """A fake clock that sleeping advances."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def failing(*errors: BaseException, answer: str = "ok") -> tuple[Any, list[tuple[float, float]]]:
    """A call that raises `errors` in turn, then answers; it records each attempt's timeout."""
    seen: list[tuple[float, float]] = []
    todo = list(errors)

    def call(timeout: tuple[float, float]) -> str:
        seen.append(timeout)
        if todo:
            raise todo.pop(0)
        return answer

    return call, seen


def api(status: int, **headers: str) -> ApiException:
    exc = ApiException(status=status, reason=f"status {status}")
    exc.headers = headers
    return exc


@pytest.mark.parametrize("status", [409, 429, 500, 502, 503, 504])
def test_retriable_answers_are_retried_with_growing_jittered_back_off(status: int) -> None:
    clock = Clock()
    call, seen = failing(api(status), api(status), api(status))
    result = with_retries(call, timeout=(5.0, 10.0), budget_s=10.0, what="t", sleep=clock.sleep, clock=clock,
                          rand=lambda: 1.0)
    assert result == "ok" and len(seen) == 4
    assert clock.slept == [0.1, 0.2, 0.4]  # base x 2^n at the top of the jitter
    clock2 = Clock()
    call, _ = failing(api(status), api(status))
    with_retries(call, timeout=(5.0, 10.0), budget_s=10.0, what="t", sleep=clock2.sleep, clock=clock2,
                 rand=lambda: 0.25)
    assert clock2.slept == [0.025, 0.05]  # full jitter: anywhere in [0, base x 2^n]


@pytest.mark.parametrize("status", [400, 403, 404, 422])
def test_the_requests_own_faults_are_not_retried(status: int) -> None:
    clock = Clock()
    call, seen = failing(api(status))
    with pytest.raises(ApiException):
        with_retries(call, timeout=(5.0, 10.0), budget_s=10.0, what="t", sleep=clock.sleep, clock=clock)
    assert len(seen) == 1 and clock.slept == []


def test_a_refused_connection_is_retried_a_read_timeout_is_not() -> None:
    clock = Clock()
    call, seen = failing(MaxRetryError(None, "/api", "connection refused"))  # type: ignore[arg-type]
    assert with_retries(call, timeout=(5.0, 10.0), budget_s=10.0, what="t", sleep=clock.sleep, clock=clock) == "ok"
    assert len(seen) == 2
    call, seen = failing(ReadTimeoutError(None, "/api", "read timed out"))  # type: ignore[arg-type]
    with pytest.raises(ReadTimeoutError):
        with_retries(call, timeout=(5.0, 10.0), budget_s=10.0, what="t", sleep=clock.sleep, clock=clock)
    assert len(seen) == 1


def test_retries_end_within_the_budget_and_each_attempt_gets_what_is_left() -> None:
    clock = Clock()
    attempts: list[tuple[float, float]] = []

    def slow_failure(timeout: tuple[float, float]) -> str:
        attempts.append(timeout)
        clock.now += min(timeout[1], 1.5)  # each attempt takes 1.5 s before its 503
        raise api(503)

    with pytest.raises(ApiException) as exc:
        with_retries(slow_failure, timeout=(5.0, 10.0), budget_s=10.0, what="t", sleep=clock.sleep, clock=clock,
                     rand=lambda: 1.0)
    assert exc.value.status == 503
    assert clock.now <= 10.0, clock.now  # never past one request's timeout, retries included
    assert attempts[0] == (5.0, 10.0) and all(b <= a for a, b in zip(attempts, attempts[1:]))
    assert all(t[1] <= 10.0 - sum(clock.slept[:i]) for i, t in enumerate(attempts))


def test_retry_after_of_a_429_is_honoured_when_it_fits() -> None:
    clock = Clock()
    call, _ = failing(api(429, **{"Retry-After": "1"}))
    with_retries(call, timeout=(5.0, 10.0), budget_s=10.0, what="t", sleep=clock.sleep, clock=clock)
    assert clock.slept == [1.0]
    call, seen = failing(api(429, **{"Retry-After": "30"}))
    with pytest.raises(ApiException):  # it would not fit: fail now, the next tick asks again
        with_retries(call, timeout=(5.0, 10.0), budget_s=10.0, what="t", sleep=clock.sleep, clock=clock)
    assert len(seen) == 1


class Apps:
    def __init__(self, *errors: ApiException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def patch_namespaced_deployment_scale(self, *args: Any, **kwargs: Any) -> None:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)

    def create_namespaced_pod_eviction(self, *args: Any, **kwargs: Any) -> None:
        self.patch_namespaced_deployment_scale()


def kube(apps: Apps, monkeypatch: pytest.MonkeyPatch) -> Kube:
    monkeypatch.setattr(kube_module.time, "sleep", lambda s: None)
    k = Kube.__new__(Kube)
    k.timeout, k.budget_s = (1.0, 2.0), 2.0
    k.apps = apps  # type: ignore[assignment]
    k.core = apps  # type: ignore[assignment]
    return k


def test_kube_calls_go_through_a_restarting_api_server(monkeypatch: pytest.MonkeyPatch) -> None:
    apps = Apps(api(503), api(500), api(409))
    assert kube(apps, monkeypatch).scale("ns", "chat-ondemand", 3, current=2) is True
    assert apps.calls == 4
    # A PodDisruptionBudget refusing an eviction (429) is not waited out: the next tick asks again.
    pdb = Apps(api(429))
    with pytest.raises(ApiException):
        kube(pdb, monkeypatch).evict_pod("ns", "chat-a")
    assert pdb.calls == 1


# -- a dead loop restarts itself -----------------------------------------------------------------


def test_a_loop_whose_coroutine_dies_is_restarted_and_ticks_on() -> None:
    pool = ticks.TickPool(workers=2)
    ticked: list[float] = []
    calls = {"interval": 0}
    stop = {"flag": False}

    def interval() -> float:
        calls["interval"] += 1
        if calls["interval"] in (3, 4):  # the loop's own code fails (twice in a row), not a tick
            raise RuntimeError("interval blew up")
        return 0.05

    def tick() -> None:
        ticked.append(time.monotonic())

    restarts_before = ticks.LOOP_RESTARTS._value.get()

    async def main() -> None:
        state = ticks.LoopState()
        loop = asyncio.create_task(ticks.supervise(
            lambda: ticks.run_loop(pool, name="s", tick=tick, interval=interval, sleep=asyncio.sleep,
                                   stopped=lambda: stop["flag"], state=state),
            name="s", stopped=lambda: stop["flag"], sleep=asyncio.sleep, base_s=0.01))
        deadline = time.monotonic() + 10
        while len(ticked) < 6:
            assert time.monotonic() < deadline, f"only {len(ticked)} ticks: the loop stayed dead"
            assert not loop.done(), loop
            await asyncio.sleep(0.01)
        stop["flag"] = True
        await asyncio.wait_for(loop, timeout=5)

    try:
        asyncio.run(main())
    finally:
        pool.shutdown()
    assert ticks.LOOP_RESTARTS._value.get() - restarts_before == 2


def test_a_restarted_loop_never_ticks_beside_the_tick_its_last_life_left_running() -> None:
    pool = ticks.TickPool(workers=4)
    release = threading.Event()
    running = 0
    peak = 0
    lock = threading.Lock()
    count = {"n": 0, "interval": 0}
    stop = {"flag": False}

    def tick() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        count["n"] += 1
        if count["n"] == 1:
            release.wait(5)  # the first tick hangs past its deadline
        with lock:
            running -= 1

    def interval() -> float:
        count["interval"] += 1
        if count["interval"] == 4:
            raise RuntimeError("dies while the first tick still runs")
        return 0.05

    async def main() -> None:
        state = ticks.LoopState()
        loop = asyncio.create_task(ticks.supervise(
            lambda: ticks.run_loop(pool, name="s", tick=tick, interval=interval, sleep=asyncio.sleep,
                                   stopped=lambda: stop["flag"], state=state),
            name="s", stopped=lambda: stop["flag"], sleep=asyncio.sleep, base_s=0.01))
        await asyncio.sleep(0.5)  # restarted meanwhile, with the first tick still hung
        release.set()
        deadline = time.monotonic() + 10
        while count["n"] < 4:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        stop["flag"] = True
        await asyncio.wait_for(loop, timeout=5)

    try:
        asyncio.run(main())
    finally:
        pool.shutdown()
    assert peak == 1
