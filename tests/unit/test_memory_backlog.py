"""A backlog seen within the last minute survives an operator restart (status.memory): after a
backlog the scale-down window spans the request rate's minute (core.stabilize.AFTER_BACKLOG_S),
and a restarted operator that forgot it shrank a fleet that had just scaled up through the
backlog, then scaled up again a cold start later (make chaos: kill -9 right after a promotion)."""

from __future__ import annotations

from dataclasses import replace

from gpufleet.control.memory import decode, encode
from gpufleet.core.types import Observation, PolicyMemory
from tests.unit.test_after_backlog import decide, lagging_rate

NOW = 1_700_000_000.0


def test_the_backlog_time_is_read_back_after_a_restart() -> None:
    memory = PolicyMemory(recommendations=((NOW - 5, 7), (NOW - 1, 7)), backlog_at=NOW - 2, started_at=NOW - 300)
    back, _ = decode(encode(memory, {}, now=NOW, keep_s=60), now=NOW + 3)
    assert back.backlog_at is not None and abs(back.backlog_at - (NOW - 2)) <= 0.05


def test_a_restarted_operator_holds_the_fleet_a_minute_after_a_backlog() -> None:
    memory = replace(PolicyMemory(), last_serving=8, started_at=0.0)
    serving, memory = decide(Observation(sampled_at=100.0, queue_depth=400.0, request_rate=300.0), memory, 100.0)
    assert serving >= 8
    # The operator is killed and a new one starts from status.memory, 6 s on (past the spec's 4 s
    # window, well within the minute after the backlog).
    restored, _ = decode(encode(memory, {}, now=101.0, keep_s=120), now=106.0)
    t = 106.0
    while t < 150.0:
        serving, restored = decide(lagging_rate(t), restored, t)
        assert serving >= 8, (t, serving)
        t += 2.0
