"""Persisted policy memory: what the policy learned, as one compact, versioned string.

The operator writes `encode(...)` into `status.memory` and, after a restart or a failover, starts
from `decode(...)` instead of an empty `PolicyMemory`: stabilisation windows, the learned rate,
the warm pool's burst memory, the spot back-off and the measured time-to-ready survive. It writes
when `fingerprint(...)` changed, or at most once a minute otherwise.

Format, version 1: compact JSON (no spaces), fields at their default value left out.

    key  PolicyMemory field / content        encoding
    v    format version                      1 (always present)
    t    when it was written                 seconds since the epoch, to 0.1 s (always present)
    r    recommendations                     series
    sb   standby_recommendations             series
    su   sustained_recommendations           series
    up   last_scale_up_at                    time
    dn   last_scale_down_at                  time
    st   started_at                          time
    rps  learned_rps_per_replica             4 significant digits
    crps learned_class_rps                   {"l4": requests/s, ...}, 4 significant digits
    bu   burst_replicas                      4 significant digits
    jf   jump_fraction                       4 significant digits
    sr   spot_retry_at                       time
    sk   spot_backoff_s                      seconds, to 0.1 s
    so   spot_outage_at                      time
    bl   backlog_at                          time
    ls   last_serving                        replicas (the previous serving target)
    sc   schedule_refs                       [[name, time, load in replicas (4 s.d.)], ...]
    ttr  time-to-ready samples per class     {"on-demand": [seconds, ...], ...}, to 0.1 s, oldest
                                             first, the newest MAX_TTR_SAMPLES per class

A *time* is an offset from `t` in seconds with one decimal (`-86400.3`); a *series* of
(time, replicas) is a flat list `[first time, value, delta to the next time, value, ...]`, deltas
in seconds with one decimal. Times are rounded to 0.1 s in integer tenths, so offsets and deltas
add up exactly. Unknown keys are ignored (a field added later without a version bump); a format
that old code would misread gets a new "v".

Series are written compacted: entries older than `now - keep_s` are dropped (the newest one is
always kept) and of every run of equal consecutive values only the first and last entries stay.
For a time-ordered series whose entries are all at or before `now`, that keeps the *set* of values
inside every window [w, now] unchanged, so the max (scale-down, standby) and min (scale-up) over
any stabilisation window are those of the full series (tests/unit/test_memory_codec.py proves it
against core.stabilize.window). Rounding moves an entry by at most 0.05 s. Should the text exceed
MAX_CHARS (a window of hours at one-second ticks, every value different), series are coarsened
conservatively: consecutive entries are merged into (time of the group's newest, max of the
group), which can only keep a larger recommendation for longer, i.e. hold more capacity.

`backlog_at` is persisted although it changes with the ticks: for AFTER_BACKLOG_S after a backlog
the scale-down window spans the request rate's minute (core.stabilize), and a restarted operator
that forgot it shrank a fleet that had just scaled up through a backlog (make chaos: kill -9 right
after a promotion demoted the promoted pods, then scaled up again a cold start later).

`last_serving`, the previous serving target, is what the next decision steps from. A restarted
operator without it steps from the pods it sees serving, and a promotion written ahead (control.
service) but not yet carried out shows fewer: make chaos killed the operator as it promoted a
standby, and the new process, blind on its first tick, held the two pods serving instead of the
three decided. After a gap the children still hold that target (nothing else scales them), so it
is as true as before the restart.

Not persisted (per-tick state, meaningless after a gap; back at their defaults on decode):
last_decided_at, last_need, last_queue, serving_seen,
serving_seen_since, settled_serving, spend_day and spent_today (the operator seeds spend from
status.usage). On decode, each non-empty series gets (now, its last value) appended: the operator
was down in between, and assuming it kept recommending what it last did is the conservative
choice -- it holds that value in every window that reaches back to the outage, so it can delay a
scale-down but never cause one (nor a scale-up the last recommendation did not already ask for).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import TypeGuard

from gpufleet.core.types import PolicyMemory
from gpufleet.core.warmpool import BURST_HALF_LIFE_S, JUMP_HALF_LIFE_S

VERSION = 1
# backlog_at moves every tick while a backlog lasts: the fingerprint sees it in steps of this many
# seconds, so a backlog costs a status write per step, not per tick; a restarted operator's window
# after the backlog (core.stabilize.AFTER_BACKLOG_S, a minute) may then end up to a step early.
BACKLOG_STEP_S = 10.0
# status.memory's maxLength in the CRD (api.models.InferenceServiceStatus.memory).
MAX_CHARS = 65536
# The operator keeps this many creation-to-Ready durations per capacity class.
MAX_TTR_SAMPLES = 20

Series = tuple[tuple[float, int], ...]
_SERIES_KEYS = ("r", "sb", "su")
JsonValue = int | float | str | list["JsonValue"] | dict[str, "JsonValue"]


class MemoryFormatError(ValueError):
    """status.memory cannot be read: not JSON, not an object, an unknown version or a bad field."""


# ---- rounding -------------------------------------------------------------------------------


def _tenths(seconds: float) -> int:
    """Seconds to whole tenths of a second (the resolution of every persisted time)."""
    return round(seconds * 10)


def _seconds(tenths: int) -> int | float:
    """Tenths back to seconds, as short as JSON can write them (12, -0.3, 86400.1)."""
    return tenths // 10 if tenths % 10 == 0 else tenths / 10


def _sig(x: float, digits: int = 4) -> int | float:
    """x to `digits` significant digits; integral values as ints (shorter JSON)."""
    r = float(f"{x:.{digits}g}")
    return int(r) if r.is_integer() and abs(r) < 1e15 else r


def _usable(x: float | None) -> TypeGuard[float]:
    """Finite and within a range where tenths are exact ints (|x| < 1e15 s: 31 million years)."""
    return x is not None and math.isfinite(x) and abs(x) < 1e15


# ---- series ---------------------------------------------------------------------------------


def retain(series: Series, now: float, keep_s: float) -> Series:
    """Drop entries older than now - keep_s, but always keep the newest (last) one."""
    if not series:
        return ()
    cut = now - keep_s
    kept = tuple(e for e in series[:-1] if e[0] >= cut)
    return (*kept, series[-1])


def compact(series: Series) -> Series:
    """Keep only the first and the last entry of every run of equal consecutive values."""
    n = len(series)
    return tuple(
        e for i, e in enumerate(series)
        if i == 0 or i == n - 1 or series[i - 1][1] != e[1] or series[i + 1][1] != e[1]
    )


def coarsen(series: Series, group: int) -> Series:
    """Merge consecutive entries, `group` at a time counted from the newest, into (time of the
    group's newest entry, max of its values): every value is remembered at least as long and at
    least as high as before (more capacity, never less)."""
    if group <= 1 or len(series) <= 1:
        return series
    out: list[tuple[float, int]] = []
    end = len(series)
    while end > 0:
        chunk = series[max(0, end - group):end]
        out.append((chunk[-1][0], max(v for _, v in chunk)))
        end -= group
    return tuple(reversed(out))


def _encode_series(series: Series, base: int) -> list[JsonValue]:
    out: list[JsonValue] = []
    prev = base
    for t, v in series:
        if not _usable(t):
            continue
        tt = _tenths(t)
        out += [_seconds(tt - prev), int(v)]
        prev = tt
    return out


# ---- encode ---------------------------------------------------------------------------------


def encode(memory: PolicyMemory, ttr_samples: Mapping[str, Sequence[float]], *, now: float, keep_s: float) -> str:
    """The persisted part of `memory` and the time-to-ready samples, as compact JSON.

    `keep_s` is the longest window any series is read over (core.stabilize.retention_s)."""
    if not _usable(now):
        raise ValueError(f"encode needs a finite time, got now={now!r}")
    base = _tenths(now)
    series = [
        compact(retain(s, now, keep_s))
        for s in (memory.recommendations, memory.standby_recommendations, memory.sustained_recommendations)
    ]
    text = _dump(memory, ttr_samples, base, series)
    group = 2
    longest = max(len(s) for s in series)
    while len(text) > MAX_CHARS and group < 2 * longest:
        text = _dump(memory, ttr_samples, base, [compact(coarsen(s, group)) for s in series])
        group *= 2
    if len(text) > MAX_CHARS:  # not from the series (an absurd schedule list): keep the newest only
        text = _dump(memory, ttr_samples, base, [s[-1:] for s in series])
    return text


def _dump(
    memory: PolicyMemory, ttr_samples: Mapping[str, Sequence[float]], base: int, series: list[Series]
) -> str:
    out: dict[str, JsonValue] = {"v": VERSION, "t": _seconds(base)}
    for key, s in zip(_SERIES_KEYS, series):
        encoded = _encode_series(s, base)
        if encoded:
            out[key] = encoded

    def time(key: str, t: float | None) -> None:
        if _usable(t):
            out[key] = _seconds(_tenths(t) - base)

    def number(key: str, x: float | None) -> None:
        if _usable(x) and _sig(x) != 0:
            out[key] = _sig(x)

    time("up", memory.last_scale_up_at)
    time("dn", memory.last_scale_down_at)
    time("st", memory.started_at)
    number("rps", memory.learned_rps_per_replica)
    crps: dict[str, JsonValue] = {n: _sig(x) for n, x in memory.learned_class_rps if _usable(x) and _sig(x) != 0}
    if crps:
        out["crps"] = crps
    number("bu", memory.burst_replicas)
    number("jf", memory.jump_fraction)
    time("sr", memory.spot_retry_at)
    if _usable(memory.spot_backoff_s) and _tenths(memory.spot_backoff_s) != 0:
        out["sk"] = _seconds(_tenths(memory.spot_backoff_s))
    time("so", memory.spot_outage_at)
    time("bl", memory.backlog_at)
    if memory.last_serving is not None:
        out["ls"] = memory.last_serving
    refs: list[JsonValue] = [
        [name, _seconds(_tenths(start) - base), _sig(load)]
        for name, start, load in memory.schedule_refs
        if _usable(start) and _usable(load)
    ]
    if refs:
        out["sc"] = refs
    ttr = _ttr(ttr_samples)
    if ttr:
        out["ttr"] = {c: [_seconds(x) for x in v] for c, v in ttr.items()}
    return json.dumps(out, separators=(",", ":"), allow_nan=False)


def _ttr(ttr_samples: Mapping[str, Sequence[float]]) -> dict[str, list[int]]:
    """Per class, in class order: the newest MAX_TTR_SAMPLES finite samples, in tenths."""
    out: dict[str, list[int]] = {}
    for c in sorted(ttr_samples):
        v = [_tenths(x) for x in ttr_samples[c] if _usable(x)][-MAX_TTR_SAMPLES:]
        if v:
            out[c] = v
    return out


# ---- decode ---------------------------------------------------------------------------------


def decode(text: str, *, now: float) -> tuple[PolicyMemory, dict[str, list[float]]]:
    """Memory and time-to-ready samples from `encode`'s text; raises MemoryFormatError.

    Each non-empty series gets (now, its last value) appended (see the module docstring)."""
    try:
        data = json.loads(text)
    except (TypeError, ValueError, RecursionError) as exc:
        raise MemoryFormatError(f"policy memory is not valid JSON ({_one_line(exc)})") from None
    if not isinstance(data, dict):
        raise MemoryFormatError(f"policy memory is not a JSON object (found {type(data).__name__})")
    if "v" not in data:
        raise MemoryFormatError(f"policy memory has no version \"v\" (this operator reads version {VERSION})")
    version = data["v"]
    if version != VERSION or isinstance(version, bool):
        raise MemoryFormatError(
            f"policy memory version {_short(version)} is not supported (this operator reads version {VERSION})"
        )
    base = _tenths(_number(data, "t"))

    def time(key: str) -> float | None:
        return (base + _tenths(_number(data, key))) / 10 if key in data else None

    def number(key: str, default: float) -> float:
        return _number(data, key) if key in data else default

    recs, standby, sustained = (_decode_series(data, key, base, now) for key in _SERIES_KEYS)
    rps = number("rps", math.nan)
    memory = PolicyMemory(
        recommendations=recs,
        standby_recommendations=standby,
        sustained_recommendations=sustained,
        last_scale_up_at=time("up"),
        last_scale_down_at=time("dn"),
        started_at=time("st"),
        learned_rps_per_replica=rps if math.isfinite(rps) else None,
        learned_class_rps=_decode_class_rps(data),
        burst_replicas=number("bu", 0.0),
        jump_fraction=number("jf", 0.0),
        spot_retry_at=time("sr"),
        spot_backoff_s=number("sk", 0.0),
        spot_outage_at=time("so"),
        backlog_at=time("bl"),
        schedule_refs=_decode_refs(data, base),
        last_serving=_count(data, "ls"),
    )
    return memory, _decode_ttr(data)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]


def _short(value: object) -> str:
    text = json.dumps(value) if isinstance(value, (int, float, str, bool)) or value is None else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def _bad(key: str, why: str) -> MemoryFormatError:
    return MemoryFormatError(f"policy memory field \"{key}\" {why}")


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and _usable(x)


def _number(data: Mapping[str, object], key: str) -> float:
    x = data.get(key)
    if not _is_number(x):
        raise _bad(key, f"is not a finite number below 1e15 (found {_short(x)})")
    assert isinstance(x, (int, float))
    return float(x)


def _count(data: Mapping[str, object], key: str) -> int | None:
    x = data.get(key)
    if x is None:
        return None
    if not isinstance(x, int) or isinstance(x, bool) or x < 0:
        raise _bad(key, f"is not a count of replicas (found {_short(x)})")
    return x


def _decode_series(data: Mapping[str, object], key: str, base: int, now: float) -> Series:
    raw = data.get(key, [])
    if not isinstance(raw, list) or len(raw) % 2:
        raise _bad(key, "is not a list of [time, value] pairs")
    out: list[tuple[float, int]] = []
    at = base
    for i in range(0, len(raw), 2):
        dt, v = raw[i], raw[i + 1]
        if not _is_number(dt) or not isinstance(v, int) or isinstance(v, bool):
            raise _bad(key, f"has a bad entry at {i // 2} ({_short(dt)}, {_short(v)})")
        assert isinstance(dt, (int, float))
        at += _tenths(dt)
        out.append((at / 10, v))
    if out and now > out[-1][0]:
        out.append((now, out[-1][1]))
    return tuple(out)


def _decode_refs(data: Mapping[str, object], base: int) -> tuple[tuple[str, float, float], ...]:
    raw = data.get("sc", [])
    if not isinstance(raw, list):
        raise _bad("sc", "is not a list")
    out: list[tuple[str, float, float]] = []
    for item in raw:
        if (
            not isinstance(item, list) or len(item) != 3 or not isinstance(item[0], str)
            or not _is_number(item[1]) or not _is_number(item[2])
        ):
            raise _bad("sc", f"has a bad entry ({_short(item)})")
        out.append((item[0], (base + _tenths(float(item[1]))) / 10, float(item[2])))
    return tuple(out)


def _decode_class_rps(data: Mapping[str, object]) -> tuple[tuple[str, float], ...]:
    raw = data.get("crps", {})
    if not isinstance(raw, dict):
        raise _bad("crps", "is not an object")
    for c, x in raw.items():
        if not _is_number(x):
            raise _bad("crps", f"has a bad rate for {_short(c)} ({_short(x)})")
    return tuple(sorted((str(c), float(x)) for c, x in raw.items()))


def _decode_ttr(data: Mapping[str, object]) -> dict[str, list[float]]:
    raw = data.get("ttr", {})
    if not isinstance(raw, dict):
        raise _bad("ttr", "is not an object")
    out: dict[str, list[float]] = {}
    for c, v in raw.items():
        if not isinstance(v, list) or not all(_is_number(x) for x in v):
            raise _bad("ttr", f"has a bad sample list for {_short(c)}")
        out[c] = [_tenths(float(x)) / 10 for x in v]
    return out


# ---- fingerprint ----------------------------------------------------------------------------


def fingerprint(memory: PolicyMemory, ttr_samples: Mapping[str, Sequence[float]]) -> str:
    """A short string that changes when something worth persisting changed.

    In it: per series the values of its runs and the first time of every run but the oldest (the
    oldest run's start is only where the window was cut: it moves every tick); the scale up/down
    times, started_at, the previous serving target, the spot back-off fields, schedule_refs and the
    time-to-ready samples, all as persisted (0.1 s, 4 significant digits); the learned rates to 2
    significant digits; burst_replicas and jump_fraction to 0.1 as the value they decay to at the
    end of the current half-life period (see `_decaying`); backlog_at in BACKLOG_STEP_S steps. Not in it: time
    passing, a run getting longer, the newest entry of a series moving, decay, nor drift of
    burst/jump fraction by less than 0.05 (unless that drift crosses a rounding boundary: no
    function of one memory can avoid that)."""
    rps = memory.learned_rps_per_replica
    key: list[object] = [
        VERSION,
        [_runs(s) for s in (memory.recommendations, memory.standby_recommendations, memory.sustained_recommendations)],
        [_tenths(t) if _usable(t) else None
         for t in (memory.last_scale_up_at, memory.last_scale_down_at, memory.started_at,
                   memory.spot_retry_at, memory.spot_outage_at)],
        math.floor(memory.backlog_at / BACKLOG_STEP_S) if _usable(memory.backlog_at) else None,
        memory.last_serving,
        _tenths(memory.spot_backoff_s) if _usable(memory.spot_backoff_s) else None,
        _sig(rps, 2) if _usable(rps) else None,
        [[n, _sig(x, 2)] for n, x in memory.learned_class_rps if _usable(x)],
        _decaying(memory.burst_replicas, memory.last_decided_at, BURST_HALF_LIFE_S),
        _decaying(memory.jump_fraction, memory.last_decided_at, JUMP_HALF_LIFE_S),
        [[n, _tenths(s), _sig(x)] for n, s, x in memory.schedule_refs if _usable(s) and math.isfinite(x)],
        _ttr(ttr_samples),
    ]
    blob = json.dumps(key, separators=(",", ":"), allow_nan=False).encode()
    return hashlib.blake2b(blob, digest_size=12).hexdigest()


def _runs(series: Series) -> list[int]:
    """Run values, and the start (tenths) of every run after the first: v0, t1, v1, t2, v2, ..."""
    out: list[int] = []
    prev: int | None = None
    for t, v in series:
        if v != prev:
            if prev is not None:
                out.append(_tenths(t) if _usable(t) else 0)
            out.append(int(v))
            prev = v
    return out


def _decaying(x: float, at: float | None, half_life_s: float) -> list[int | None]:
    """A value that halves every `half_life_s` unless it rises (core.warmpool), decay removed.

    The value projected to the end of the current half-life period: constant while it only
    decays, at most x (so a drift of x moves it no more), to 0.1. The period (floor(at /
    half_life_s)) is part of the key while the projection is at least 0.05: pure decay changes the
    key at most once per half-life. Without a decision time (just decoded), x itself."""
    if not _usable(x):
        return [None, None]
    if at is None or not _usable(at):
        return [None, round(x * 10)]
    period = math.floor(at / half_life_s)
    projected = round(x * 2.0 ** (-((period + 1) * half_life_s - at) / half_life_s) * 10)
    return [period if projected else None, projected]
