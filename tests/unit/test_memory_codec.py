"""status.memory: the policy memory codec (control.memory) round-trips, compacts without changing
any stabilisation window, stays small, refuses what it cannot read, and fingerprints only change
that is worth a status write."""

from __future__ import annotations

import json
import math
from dataclasses import fields, replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpufleet.api import crd
from gpufleet.api.models import InferenceServiceSpec, InferenceServiceStatus
from gpufleet.control.memory import (
    BACKLOG_STEP_S,
    MAX_CHARS,
    MemoryFormatError,
    Series,
    coarsen,
    compact,
    decode,
    encode,
    fingerprint,
    retain,
)
from gpufleet.core.policy import GpufleetPolicy
from gpufleet.core.stabilize import record, window
from gpufleet.core.types import ON_DEMAND, SPOT, FleetState, Observation, PolicyMemory, Replica, ReplicaState
from gpufleet.core.warmpool import BURST_HALF_LIFE_S, decay_burst

PROPS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NOW = 1_700_000_000.0
PERSISTED = {
    "recommendations", "standby_recommendations", "sustained_recommendations", "last_scale_up_at",
    "last_scale_down_at", "learned_rps_per_replica", "started_at", "burst_replicas", "jump_fraction",
    "spot_retry_at", "spot_backoff_s", "spot_outage_at", "schedule_refs", "backlog_at", "last_serving",
}


def series_at(values: list[int], now: float = NOW, dt: float = 1.0) -> Series:
    """One entry per tick of `dt`, the last one at `now`."""
    n = len(values)
    return tuple((now - (n - 1 - i) * dt, v) for i, v in enumerate(values))


# ---- compaction keeps every window ----------------------------------------------------------


@st.composite
def ordered_series(draw: st.DrawFn) -> tuple[Series, float]:
    """A time-ordered series (runs of equal values, ties in time allowed) and a `now` at or
    after its newest entry, like the policy's: record() appends (now, value) and drops the future."""
    gaps = draw(st.lists(st.floats(0.0, 30.0), min_size=0, max_size=80))
    values = draw(st.lists(st.integers(0, 5), min_size=len(gaps) + 1, max_size=len(gaps) + 1))
    t = draw(st.floats(-1e4, 1e4))
    times = [t]
    for g in gaps:
        times.append(times[-1] + g)
    now = times[-1] + draw(st.floats(0.0, 50.0))
    return tuple(zip(times, values)), now


@PROPS
@given(data=ordered_series(), windows=st.lists(st.floats(0.0, 3000.0), max_size=10))
def test_compaction_keeps_the_values_of_every_window(data: tuple[Series, float], windows: list[float]) -> None:
    recs, now = data
    small = compact(recs)
    assert set(small) <= set(recs) and len(small) <= len(recs)
    # Every window length, including each entry's exact age (the edges), and none at all.
    for w in [*windows, *(now - t for t, _ in recs), 0.0]:
        full, kept = window(recs, now, w), window(small, now, w)
        assert set(full) == set(kept)
        if full:
            assert max(full) == max(kept) and min(full) == min(kept)


@PROPS
@given(data=ordered_series(), keep=st.floats(0.0, 2000.0), windows=st.lists(st.floats(0.0, 2000.0), max_size=10))
def test_retention_keeps_every_window_it_covers_and_the_newest_entry(
    data: tuple[Series, float], keep: float, windows: list[float]
) -> None:
    recs, now = data
    kept = compact(retain(recs, now, keep))
    assert kept[-1] == recs[-1]
    for w in windows:
        if w <= keep:
            assert set(window(recs, now, w)) == set(window(kept, now, w))


def test_runs_keep_their_first_and_last_entries() -> None:
    recs = series_at([3, 3, 3, 3, 5, 5, 3, 3, 3])
    assert [v for _, v in compact(recs)] == [3, 3, 5, 5, 3, 3]
    assert compact(recs)[0] == recs[0] and compact(recs)[-1] == recs[-1]
    assert compact(()) == () and compact(recs[:1]) == recs[:1]


# ---- round trip -----------------------------------------------------------------------------

times = st.floats(NOW - 10 * 86400, NOW + 86400)
maybe_time = st.none() | times
small_float = st.floats(0.0, 1e4)


@st.composite
def memories(draw: st.DrawFn) -> PolicyMemory:
    def series() -> Series:
        values = draw(st.lists(st.integers(0, 40), max_size=60))
        return series_at(values, dt=draw(st.sampled_from([1.0, 5.0, 2.5])))

    return PolicyMemory(
        recommendations=series(),
        standby_recommendations=series(),
        sustained_recommendations=series(),
        last_scale_up_at=draw(maybe_time),
        last_scale_down_at=draw(maybe_time),
        learned_rps_per_replica=draw(st.none() | st.floats(0.01, 1e5)),
        started_at=draw(maybe_time),
        burst_replicas=draw(small_float),
        jump_fraction=draw(st.floats(0.0, 1.0)),
        spot_retry_at=draw(maybe_time),
        spot_backoff_s=draw(st.floats(0.0, 1e5)),
        spot_outage_at=draw(maybe_time),
        backlog_at=draw(maybe_time),
        schedule_refs=tuple(
            draw(st.lists(st.tuples(st.text(min_size=1, max_size=20), times, small_float), max_size=3))
        ),
        # Per-tick state: not persisted.
        last_serving=draw(st.none() | st.integers(0, 40)),
        last_decided_at=draw(maybe_time),
        last_need=draw(st.none() | st.integers(0, 40)),
        last_queue=draw(st.none() | st.tuples(small_float, times)),
        serving_seen=draw(st.none() | st.integers(0, 40)),
        serving_seen_since=draw(maybe_time),
        settled_serving=draw(st.none() | st.integers(0, 40)),
        spend_day=draw(st.none() | st.integers(0, 30000)),
        spent_today=draw(small_float),
    )


ttr_samples = st.dictionaries(
    st.sampled_from([ON_DEMAND, SPOT]), st.lists(st.floats(0.0, 3600.0), max_size=25), max_size=2
)


def close_time(a: float | None, b: float | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and abs(a - b) <= 0.05 + 1e-6)


def close_sig(a: float | None, b: float | None) -> bool:
    """Equal to 4 significant digits (or both absent)."""
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=5e-4, abs_tol=1e-12)


@PROPS
@given(memory=memories(), ttr=ttr_samples, keep=st.sampled_from([0.0, 30.0, 120.0, 600.0]))
def test_round_trip_keeps_every_persisted_field(memory: PolicyMemory, ttr: dict[str, list[float]], keep: float) -> None:
    text = encode(memory, ttr, now=NOW, keep_s=keep)
    assert text.startswith('{"v":1,') and text == json.dumps(json.loads(text), separators=(",", ":"))
    back, ttr_back = decode(text, now=NOW)

    for name in ("recommendations", "standby_recommendations", "sustained_recommendations"):
        want = compact(retain(getattr(memory, name), NOW, keep))
        got = getattr(back, name)
        # (now, last value) is appended unless the newest entry is already at `now`.
        if want and NOW > round(want[-1][0], 1):
            assert got[-1] == (NOW, want[-1][1])
            got = got[:-1]
        assert [v for _, v in got] == [v for _, v in want]
        assert all(close_time(a, b) for (a, _), (b, _) in zip(got, want))
    for name in ("last_scale_up_at", "last_scale_down_at", "started_at", "spot_retry_at", "spot_outage_at", "backlog_at"):
        assert close_time(getattr(back, name), getattr(memory, name)), name
    assert abs(back.spot_backoff_s - memory.spot_backoff_s) <= 0.05 + 1e-6
    assert back.last_serving == memory.last_serving
    assert close_sig(back.learned_rps_per_replica, memory.learned_rps_per_replica)
    for name in ("burst_replicas", "jump_fraction"):
        got, want = getattr(back, name), getattr(memory, name)
        assert close_sig(got, want) or (got == 0.0 and abs(want) < 1e-300), name
    assert len(back.schedule_refs) == len(memory.schedule_refs)
    for (n1, t1, x1), (n2, t2, x2) in zip(back.schedule_refs, memory.schedule_refs):
        assert n1 == n2 and close_time(t1, t2) and close_sig(x1, x2)
    want_ttr = {c: v[-20:] for c, v in ttr.items() if v}
    assert set(ttr_back) == set(want_ttr)
    for c, v in want_ttr.items():
        assert len(ttr_back[c]) == len(v) and all(abs(a - b) <= 0.05 + 1e-6 for a, b in zip(ttr_back[c], v))

    # What is not persisted comes back at its default.
    default = PolicyMemory()
    for f in fields(PolicyMemory):
        if f.name not in PERSISTED:
            assert getattr(back, f.name) == getattr(default, f.name), f.name
    # Encoding what was decoded loses nothing more (nothing drifts restart after restart): the
    # series only lose the middle of the run that the appended entry extended.
    again, ttr_again = decode(encode(back, ttr_back, now=NOW, keep_s=keep), now=NOW)
    assert ttr_again == ttr_back
    assert again == replace(
        back,
        recommendations=compact(back.recommendations),
        standby_recommendations=compact(back.standby_recommendations),
        sustained_recommendations=compact(back.sustained_recommendations),
    )


def test_defaults_encode_to_the_version_and_time_only() -> None:
    text = encode(PolicyMemory(), {}, now=NOW + 0.26, keep_s=300)
    assert text == '{"v":1,"t":1700000000.3}'
    assert decode(text, now=NOW + 5) == (PolicyMemory(), {})


def test_decode_holds_the_last_recommendation_until_now() -> None:
    memory = PolicyMemory(recommendations=series_at([4, 6, 6, 6, 5]), standby_recommendations=series_at([2]))
    back, _ = decode(encode(memory, {}, now=NOW, keep_s=300), now=NOW + 3600)
    assert back.recommendations == ((NOW - 4, 4), (NOW - 3, 6), (NOW - 1, 6), (NOW, 5), (NOW + 3600, 5))
    assert back.standby_recommendations == ((NOW, 2), (NOW + 3600, 2))
    assert back.sustained_recommendations == ()
    # After an hour down, a 300 s window sees the held value only: no scale-down below it.
    assert window(back.recommendations, NOW + 3605, 300) == [5]


def test_time_offsets_and_series_deltas_add_up_exactly() -> None:
    start = NOW + 0.04
    memory = PolicyMemory(recommendations=tuple((start + 0.1 * i, i % 2) for i in range(2000)), started_at=start)
    back, _ = decode(encode(memory, {}, now=start + 200, keep_s=1000), now=start + 200)
    assert [round(t * 10) for t, _ in back.recommendations[:-1]] == [round(start * 10) + i for i in range(2000)]
    assert back.started_at == round(start * 10) / 10


# ---- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "policy memory is not valid JSON"),
        ("not json at all", "policy memory is not valid JSON"),
        ('{"v":1,', "policy memory is not valid JSON"),
        ("[1, 2]", "policy memory is not a JSON object (found list)"),
        ('"v1"', "policy memory is not a JSON object (found str)"),
        ("null", "policy memory is not a JSON object (found NoneType)"),
        ('{"t":1}', 'policy memory has no version "v" (this operator reads version 1)'),
        ('{"v":2,"t":1}', "policy memory version 2 is not supported (this operator reads version 1)"),
        ('{"v":"1","t":1}', 'policy memory version "1" is not supported (this operator reads version 1)'),
        ('{"v":true,"t":1}', "policy memory version true is not supported (this operator reads version 1)"),
        ('{"v":0}', "policy memory version 0 is not supported (this operator reads version 1)"),
        ('{"v":1}', 'policy memory field "t" is not a finite number below 1e15 (found null)'),
        ('{"v":1,"t":5,"r":[1]}', 'policy memory field "r" is not a list of [time, value] pairs'),
        ('{"v":1,"t":5,"r":[0,1.5]}', 'policy memory field "r" has a bad entry at 0 (0, 1.5)'),
        ('{"v":1,"t":5,"bu":"x"}', 'policy memory field "bu" is not a finite number below 1e15 (found "x")'),
        ('{"v":1,"t":5,"sc":[["a",1]]}', 'policy memory field "sc" has a bad entry (list)'),
        ('{"v":1,"t":5,"ttr":{"spot":[1,"a"]}}', 'policy memory field "ttr" has a bad sample list for "spot"'),
        ('{"v":1,"t":NaN}', 'policy memory field "t" is not a finite number below 1e15 (found NaN)'),
    ],
)
def test_unreadable_memory_is_refused_with_one_clear_line(text: str, message: str) -> None:
    with pytest.raises(MemoryFormatError) as err:
        decode(text, now=NOW)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)
    assert isinstance(err.value, ValueError)


@PROPS
@given(text=st.text(max_size=200) | st.binary(max_size=50).map(lambda b: b.decode("latin-1")))
def test_garbage_never_raises_anything_else(text: str) -> None:
    try:
        decode(text, now=NOW)
    except MemoryFormatError:
        pass


@PROPS
@given(value=st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4),
    max_leaves=20,
), key=st.sampled_from(["r", "sb", "su", "up", "dn", "st", "rps", "bu", "jf", "sr", "sk", "so", "sc", "ttr", "ls", "zz"]))
def test_a_version_1_object_with_any_bad_field_raises_only_the_format_error(value: Any, key: str) -> None:
    try:
        decode(json.dumps({"v": 1, "t": NOW, key: value}), now=NOW)
    except MemoryFormatError:
        pass


# ---- size -----------------------------------------------------------------------------------


def _full_memory(values: list[int]) -> PolicyMemory:
    recs = series_at(values)
    return PolicyMemory(
        recommendations=recs, standby_recommendations=series_at([v % 3 for v in values]),
        sustained_recommendations=recs, last_scale_up_at=NOW - 40.3, last_scale_down_at=NOW - 900.2,
        learned_rps_per_replica=87.654321, started_at=NOW - 8 * 86400, burst_replicas=2.718281,
        jump_fraction=0.333333, spot_retry_at=NOW + 1200, spot_backoff_s=1200.0, spot_outage_at=NOW - 3000,
        schedule_refs=(("launch", NOW - 1800, 6.5),),
    )


def test_a_constantly_changing_five_minute_window_stays_under_8_kb() -> None:
    values = [10 + (i * 7) % 13 for i in range(301)]  # 1 s ticks, no two neighbours equal
    ttr = {ON_DEMAND: [95.5 + i for i in range(20)], SPOT: [140.25 + i for i in range(20)]}
    text = encode(_full_memory(values), ttr, now=NOW, keep_s=300)
    assert len(text) < 8 * 1024, len(text)


def test_a_steady_window_stays_under_300_bytes() -> None:
    memory = _full_memory([7] * 301)
    text = encode(memory, {ON_DEMAND: [96.2, 101.7, 99.0]}, now=NOW, keep_s=300)
    assert len(text) < 300, (len(text), text)


def test_an_oversized_memory_is_coarsened_conservatively_under_the_cap() -> None:
    values = [i % 50 for i in range(3 * 3600 + 1)]  # three hours at 1 s ticks, every value different
    memory = PolicyMemory(
        recommendations=series_at(values), standby_recommendations=series_at(values),
        sustained_recommendations=series_at(values),
    )
    text = encode(memory, {}, now=NOW, keep_s=3 * 3600)
    assert len(text) <= MAX_CHARS
    back, _ = decode(text, now=NOW)
    for w in (0, 1, 10, 60, 300, 1800, 3 * 3600):
        # Every window's max is at least what it was (capacity is only held longer).
        assert max(window(back.recommendations, NOW, w)) >= max(window(memory.recommendations, NOW, w))
    assert back.recommendations[-1][0] == NOW


def test_the_cap_is_the_crds_and_the_status_takes_the_text() -> None:
    status = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert status["properties"]["memory"]["maxLength"] == MAX_CHARS
    text = encode(_full_memory([3, 4] * 100), {ON_DEMAND: [90.0]}, now=NOW, keep_s=300)
    parsed = InferenceServiceStatus.model_validate({"memory": text})
    assert parsed.memory == text and parsed.model_dump(by_alias=True)["memory"] == text
    assert InferenceServiceStatus().memory is None


def test_coarsening_never_lowers_a_window_max() -> None:
    recs = series_at([1, 9, 2, 3, 8, 1, 1, 4])
    for group in (2, 3, 4, 8, 16):
        merged = coarsen(recs, group)
        assert merged[-1][0] == recs[-1][0]
        for w in range(10):
            assert max(window(merged, NOW, w)) >= max(window(recs, NOW, w))


# ---- fingerprint ----------------------------------------------------------------------------


def _ticks(
    memory: PolicyMemory, values: list[int], start: float, dt: float = 5.0, keep: float = 300.0
) -> list[PolicyMemory]:
    """What the policy's memory looks like tick by tick: record() each value, burst decaying."""
    out = []
    for i, v in enumerate(values):
        now = start + i * dt
        last = memory.last_decided_at
        memory = replace(
            memory,
            recommendations=record(memory.recommendations, now, v, keep),
            sustained_recommendations=record(memory.sustained_recommendations, now, v, keep),
            standby_recommendations=record(memory.standby_recommendations, now, 1, keep),
            burst_replicas=decay_burst(memory.burst_replicas, 0, now - last if last is not None else 0.0),
            last_decided_at=now,
        )
        out.append(memory)
    return out


def test_fingerprint_is_unchanged_while_only_time_passes() -> None:
    start = NOW - 600
    base = PolicyMemory(
        recommendations=series_at([4] * 60, start, 5.0), sustained_recommendations=series_at([4] * 60, start, 5.0),
        started_at=start - 3600, learned_rps_per_replica=50.0, burst_replicas=3.0, last_decided_at=start,
        spot_backoff_s=600.0, spot_retry_at=start + 300,
    )
    ttr = {ON_DEMAND: [90.0, 95.0]}
    # Steady at 4 for 20 minutes at 5 s ticks: the window slides, runs get longer, burst decays.
    ticks = _ticks(base, [4] * 240, start + 5)
    prints = [fingerprint(m, ttr) for m in ticks]
    # The burst decays from 3 to 0.02: its projection moves at most once per half-life.
    assert len(set(prints)) <= 2 + math.ceil(240 * 5 / BURST_HALF_LIFE_S)
    # With no burst at all: one fingerprint for the whole twenty minutes.
    quiet = _ticks(replace(base, burst_replicas=0.0), [4] * 240, start + 5)
    assert len({fingerprint(m, ttr) for m in quiet}) == 1


def test_fingerprint_changes_with_a_new_recommendation_and_when_it_leaves_the_window() -> None:
    ticks = _ticks(PolicyMemory(), [4] * 10 + [6] + [4] * 100, NOW, keep=300)
    prints = [fingerprint(m, {}) for m in ticks]
    assert prints[9] != prints[10] != prints[11]  # 6 arrives, then 4 again: new runs
    assert len(set(prints[11:70])) == 1  # steady: nothing new while the 6 is in the window
    assert len(set(prints[70:])) == 2  # the 6 and the 4s before it slid out of the 300 s window


def test_fingerprint_changes_when_the_spot_back_off_changes() -> None:
    memory = PolicyMemory(recommendations=series_at([3, 3]), spot_backoff_s=300.0, spot_retry_at=NOW + 300)
    fp = fingerprint(memory, {})
    assert fingerprint(replace(memory, spot_backoff_s=600.0), {}) != fp
    assert fingerprint(replace(memory, spot_retry_at=NOW + 600), {}) != fp
    assert fingerprint(replace(memory, spot_outage_at=NOW), {}) != fp
    assert fingerprint(replace(memory, spot_retry_at=None, spot_backoff_s=0.0), {}) != fp


def test_fingerprint_follows_what_is_persisted() -> None:
    memory = _full_memory([5] * 30)
    ttr = {ON_DEMAND: [90.0]}
    fp = fingerprint(memory, ttr)
    assert fingerprint(memory, {ON_DEMAND: [90.0, 92.0]}) != fp  # a new time-to-ready sample
    assert fingerprint(memory, {ON_DEMAND: [90.02]}) == fp  # below the 0.1 s resolution
    assert fingerprint(memory, {ON_DEMAND: [90.0], SPOT: []}) == fp
    assert fingerprint(replace(memory, learned_rps_per_replica=88.1), ttr) == fp  # 2 significant digits
    assert fingerprint(replace(memory, learned_rps_per_replica=91.0), ttr) != fp
    assert fingerprint(replace(memory, last_scale_up_at=NOW), ttr) != fp
    assert fingerprint(replace(memory, last_scale_down_at=NOW), ttr) != fp
    assert fingerprint(replace(memory, started_at=NOW), ttr) != fp
    assert fingerprint(replace(memory, schedule_refs=()), ttr) != fp
    assert fingerprint(replace(memory, last_serving=9), ttr) != fp  # the next decision steps from it
    # Per-tick state is not persisted, so it does not count.
    assert fingerprint(replace(memory, last_need=9, spent_today=3.0), ttr) == fp
    assert fingerprint(replace(memory, backlog_at=NOW), ttr) != fp  # the after-backlog window outlives a restart


def test_a_lasting_backlog_changes_the_fingerprint_once_per_step_not_every_tick() -> None:
    base = 1_700_000_000.0  # a multiple of BACKLOG_STEP_S
    memory = PolicyMemory(started_at=NOW - 600, backlog_at=base)
    fp = fingerprint(memory, {})
    assert all(fingerprint(replace(memory, backlog_at=base + t), {}) == fp for t in (2.0, 4.0, 9.9))
    assert fingerprint(replace(memory, backlog_at=base + BACKLOG_STEP_S), {}) != fp


@pytest.mark.parametrize("name", ["burst_replicas", "jump_fraction"])
@pytest.mark.parametrize("at", [None, NOW])
def test_fingerprint_ignores_small_drift_of_the_burst_memory(name: str, at: float | None) -> None:
    memory = replace(_full_memory([5] * 30), last_decided_at=at, burst_replicas=0.0, jump_fraction=0.0)
    def with_value(x: float) -> PolicyMemory:
        return replace(memory, burst_replicas=x) if name == "burst_replicas" else replace(memory, jump_fraction=x)

    fp = {x: fingerprint(with_value(x), {}) for x in (0.0, 0.03, 0.5, 0.52, 0.54, 0.9)}
    assert fp[0.0] == fp[0.03]  # noise around nothing
    assert fp[0.5] == fp[0.52] == fp[0.54]  # a drift of less than 0.05
    assert fp[0.5] != fp[0.9] != fp[0.0]  # a real rise


def test_fingerprint_of_the_burst_memory_ignores_decay_within_a_half_life() -> None:
    at = 3000 * BURST_HALF_LIFE_S  # a period boundary: the next half-life is one period
    memory = PolicyMemory(burst_replicas=4.0, last_decided_at=at)
    fp = fingerprint(memory, {})
    for dt in (1.0, 30.0, 150.0, BURST_HALF_LIFE_S - 1.0):
        decayed = replace(memory, burst_replicas=decay_burst(4.0, 0, dt), last_decided_at=at + dt)
        assert fingerprint(decayed, {}) == fp
    risen = replace(memory, burst_replicas=decay_burst(4.0, 6, 30.0), last_decided_at=at + 30.0)
    assert fingerprint(risen, {}) != fp


# ---- the policy on a restored memory --------------------------------------------------------


def _spec() -> InferenceServiceSpec:
    return InferenceServiceSpec.model_validate({
        "model": {"name": "chat"},
        "template": {"spec": {"containers": [{"name": "triton", "image": "triton"}]}},
        "replicas": {"min": 1, "max": 32},
        "capacity": {"onDemand": {"base": 0}},
        "scaling": {"intervalSeconds": 5, "targetRpsPerReplica": 10, "scaleDown": {"stabilizationSeconds": 120}},
    })


def _fleet(serving: int) -> FleetState:
    return FleetState(replicas=tuple(
        Replica(f"s{i}", ON_DEMAND, ReplicaState.serving, 0.0, 60.0) for i in range(serving)
    ))


def test_a_restart_keeps_the_scale_down_window_where_it_was() -> None:
    """Load drops from 100 to 20 rps; the operator restarts 60 s later. With its memory restored it
    scales down when the uninterrupted operator would have, not one window later, and not earlier."""
    spec, policy = _spec(), GpufleetPolicy()

    def run(memory: PolicyMemory, start: float, ticks: int, serving: int) -> tuple[list[int], PolicyMemory]:
        out = []
        for i in range(ticks):
            now = start + 5 * i
            rate = 100.0 if now < NOW else 20.0
            obs = Observation(sampled_at=now, queue_depth=0.0, request_rate=rate)
            plan, memory = policy.decide(spec=spec, observation=obs, forecast=None, fleet=_fleet(serving),
                                         memory=memory, now=now)
            serving = plan.serving
            out.append(serving)
        return out, memory

    before, memory = run(PolicyMemory(), NOW - 600, 120 + 12, 10)  # up to NOW + 55
    serving = before[-1]
    restart = NOW + 60
    whole, _ = run(memory, restart, 60, serving)
    restored_memory, _ = decode(encode(memory, {}, now=restart - 5, keep_s=120), now=restart)
    restored, _ = run(restored_memory, restart, 60, serving)
    fresh, _ = run(PolicyMemory(), restart, 60, serving)
    assert before[-1] == 10
    assert restored == whole
    assert whole.index(min(whole)) < fresh.index(min(fresh))  # an empty memory waits a whole window
