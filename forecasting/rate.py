"""`RateForecaster`: the control loop's view: observe (time, rps), ask for the peak over a horizon.

Samples are averaged into fixed buckets of `step_s`; only complete buckets (ending at or before
`now`) are history. Refit rule that bounds the cost: parameters and the method choice are
re-estimated when the history has grown by a quarter since the last fit (fast while warming up) or
at this forecaster's own refit boundary (daily by default, shifted by `refit_offset_s`); in between, new buckets only advance
the fitted state (`FittedForecaster.append`) and repeated calls in one bucket hit a cache.
No clock: every time is an argument.
"""

from __future__ import annotations

import math
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from gpufleet.forecasting.api import FittedForecaster, Forecast, fit

# Ring slots beyond max_points: pruning keeps max_points + 2 buckets and runs again 7 buckets
# later, so with one sample per bucket every bucket held sits in the ring and `_old` stays empty.
_SLACK = 16


@dataclass(frozen=True, slots=True)
class RateForecast:
    """Peak over (now, now + horizon]: mean and upper quantile, in requests per second."""

    mean_rps: float
    upper_rps: float
    method: str
    note: str
    steps: int  # buckets of step_s covered
    history_points: int  # complete buckets of history used (including gaps)
    horizon_s: float = 0.0  # as asked (maps onto core's ForecastSummary field for field)


class RateForecaster:
    """Rolling history of one service's request rate, with a cached, cheaply updated fit."""

    def __init__(
        self,
        *,
        step_s: float = 300.0,
        method: str = "auto",
        seasonalities_s: Sequence[float] = (86400.0, 604800.0),
        max_history_s: float = 15 * 86400.0,
        refit_every_s: float = 86400.0,
        max_horizon_s: float = 3600.0,
        refit_offset_s: float = 0.0,
        fit_memo: MutableMapping[bytes, FittedForecaster] | None = None,
    ) -> None:
        """refit_offset_s shifts this forecaster's daily refit boundary: give each service a
        different one (e.g. from a hash of its name) so a fleet does not refit all at once.

        fit_memo: full fits by their exact inputs, shared between forecasters (a fit is a pure
        function of the history and the settings, and FittedForecaster is immutable): the
        simulator's runs of one trace feed identical rate histories, whatever the policy does.
        The caller bounds it."""
        self.fit_memo = fit_memo
        self.step_s = float(step_s) if math.isfinite(step_s) and step_s > 0 else 300.0
        self.method = method
        self.seasonalities_s = tuple(seasonalities_s)
        self.max_points = max(int(max_history_s // self.step_s), 2)
        self.refit_every = max(int(refit_every_s // self.step_s), 1)
        self.horizon = max(int(math.ceil(max_horizon_s / self.step_s)), 1)
        off = refit_offset_s if math.isfinite(refit_offset_s) else 0.0
        self.refit_offset = int(off // self.step_s) % self.refit_every
        # History: a preallocated ring of per-bucket sums (float64: means are bit-identical to
        # plain float sums) and sample counts, one slot per bucket of (_hi - _cap, _hi]. Buckets
        # the ring has moved past but that are not forgotten yet (late samples; sparse history,
        # as retention counts buckets held, not time) wait in `_old` until the next prune.
        # Held at step_s=60, a sample a minute (tracemalloc): 8 d 1.74 MiB -> 0.21 MiB, 15 d 2.28 MiB -> 0.21 MiB.
        self._cap = self.max_points + _SLACK
        self._sums = np.zeros(self._cap, dtype=np.float64)
        self._counts: np.ndarray = np.zeros(self._cap, dtype=np.uint16)  # widened if a bucket fills
        self._count_max = int(np.iinfo(np.uint16).max)
        self._hi = 0  # newest bucket held (meaningful once _n > 0)
        self._n = 0  # buckets held (ring and _old)
        self._old: dict[int, tuple[float, int]] = {}  # bucket -> (sum, count), all below the ring
        self._lo = 0  # oldest bucket held
        self._fitted: FittedForecaster | None = None
        self._fitted_first: int = 0  # bucket index of the fitted history's first point
        self._fitted_last: int = -1  # last bucket index the fitted state has seen
        self._fit_last: int = 0  # last bucket index at the last full fit
        self._fit_n: int = 0  # history length at the last full fit
        self._cache: dict[tuple[int, int, float], RateForecast] = {}
        self._cache_last = -(2**62)
        self.fits = 0  # full fits done (for benchmarks and tests)
        self.appends = 0  # cheap state updates done

    def observe(self, t: float, rps: float) -> None:
        """Record a rate sample at time `t` (seconds); non-finite or negative samples are ignored.

        A late sample for a bucket the fitted state has already consumed is kept, and counts
        from the next full fit on (undoing a filter step would cost a refit each time)."""
        if not (math.isfinite(t) and math.isfinite(rps)) or rps < 0:
            return
        k = int(t // self.step_s)
        if self._cache and k <= self._cache_last:
            self._cache.clear()  # a late sample changed a bucket that answers were built on
        self._lo = min(self._lo, k) if self._n else k
        self._add(k, float(rps))
        # Forget buckets older than the kept window (bounded memory, bounded fit cost).
        if self._n > self.max_points + 8:
            self._prune(self._hi - self.max_points - 1)

    def _add(self, k: int, rps: float) -> None:
        if not self._n:
            self._hi = k
        elif k > self._hi:
            self._advance(k)
        if k <= self._hi - self._cap:  # below the ring: a late sample
            prev = self._old.get(k)
            if prev is None:
                self._n += 1
                self._old[k] = (0.0 + rps, 1)
            else:
                self._old[k] = (prev[0] + rps, prev[1] + 1)
            return
        i = k % self._cap
        c = int(self._counts[i])
        if c == 0:
            self._n += 1
        elif c == self._count_max:
            self._counts = self._counts.astype(np.uint32 if self._counts.dtype == np.uint16 else np.uint64)
            self._count_max = int(np.iinfo(self._counts.dtype).max)
        self._sums[i] += rps
        self._counts[i] += 1

    def _advance(self, k: int) -> None:
        """Move the ring's newest bucket to k: buckets it moves past go to `_old`."""
        cap, hi = self._cap, self._hi
        for j in self._in_ring(hi - cap + 1, k - cap):  # the buckets the ring moves past
            i = j % cap
            self._old[j] = (float(self._sums[i]), int(self._counts[i]))
        for a, b in self._slots(max(hi + 1, k - cap + 1), k):  # their slots, now k's side
            self._sums[a:b] = 0.0
            self._counts[a:b] = 0
        self._hi = k

    def _slots(self, first: int, last: int) -> list[tuple[int, int]]:
        """Ring slices [a, b) holding buckets first..last (at most `_cap` of them), in order."""
        n = last - first + 1
        if n <= 0:
            return []
        a = first % self._cap
        if a + n <= self._cap:
            return [(a, a + n)]
        return [(a, self._cap), (0, a + n - self._cap)]

    def _in_ring(self, first: int, last: int) -> list[int]:
        """Buckets within first..last that the ring holds samples for, ascending."""
        lo, hi = max(first, self._hi - self._cap + 1), min(last, self._hi)
        out: list[int] = []
        start = lo
        for a, b in self._slots(lo, hi):
            out.extend(start + int(x) for x in np.flatnonzero(self._counts[a:b]))
            start += b - a
        return out

    def _prune(self, cutoff: int) -> None:
        """Forget every bucket below `cutoff` (never the newest, _hi)."""
        for j in [j for j in self._old if j < cutoff]:
            del self._old[j]
            self._n -= 1
        for a, b in self._slots(self._hi - self._cap + 1, cutoff - 1):
            self._n -= int(np.count_nonzero(self._counts[a:b]))
            self._sums[a:b] = 0.0
            self._counts[a:b] = 0
        if self._old:
            self._lo = min(self._old)
        else:
            first = max(cutoff, self._hi - self._cap + 1)
            for a, b in self._slots(first, self._hi):
                seg = self._counts[a:b]
                i = int(np.argmax(seg != 0))
                if seg[i]:
                    self._lo = first + i
                    break
                first += b - a

    def forecast(
        self, now: float, horizon_s: float, quantile: float = 0.9, *, allow_fit: bool = True
    ) -> RateForecast | None:
        """Peak mean and upper rate over (now, now + horizon_s]; None with no history at all.

        allow_fit=False defers a due full fit (a fleet-wide budget, e.g. at operator start when
        every service needs one): the state is moved forward with the old parameters, or, before
        the first fit, the last observed rate is returned, and `note` says so.
        Never raises: any numerical failure degrades to the last observed rate, said in `note`.
        """
        if not math.isfinite(now):
            return None
        last_complete = int(now // self.step_s) - 1
        first = self._first_bucket(last_complete)
        if first is None:
            return None
        horizon_s = horizon_s if math.isfinite(horizon_s) and horizon_s > 0 else 0.0
        # Buckets overlapping (now, now + horizon]: from the current, partial one onwards.
        steps = max(int((now + horizon_s) // self.step_s) - last_complete, 1)
        key = (last_complete, steps, float(quantile))
        cached = self._cache.get(key)
        if cached is not None:
            # (Frozen: the cached answer itself serves a call with its own horizon.)
            return cached if cached.horizon_s == horizon_s else replace(cached, horizon_s=horizon_s)
        deferred = not allow_fit and self._due(first, last_complete)
        try:
            if deferred and self._fitted is None:
                result = self._fallback(first, last_complete, steps, "fit deferred")
            else:
                result = self._forecast(first, last_complete, steps, quantile, deferred)
        except Exception as exc:  # noqa: BLE001 - the control loop must always get an answer
            result = self._fallback(first, last_complete, steps, f"forecast failed ({exc})")
        result = replace(result, horizon_s=horizon_s)
        if not deferred:  # a deferred answer is replaced as soon as the fit is allowed
            if len(self._cache) > 64:
                self._cache.clear()
            self._cache[key] = result
            self._cache_last = max(self._cache_last, last_complete)
        return result

    def needs_fit(self, now: float) -> bool:
        """Whether `forecast(now, ...)` would do a full fit (for a caller spreading them out)."""
        if not math.isfinite(now):
            return False
        last_complete = int(now // self.step_s) - 1
        first = self._first_bucket(last_complete)
        return first is not None and self._due(first, last_complete)

    def _due(self, first: int, last: int) -> bool:
        r, off = self.refit_every, self.refit_offset
        return (
            self._fitted is None
            or (last + off) // r > (self._fit_last + off) // r  # crossed this service's boundary
            or last - self._fit_last >= max(self._fit_n // 4, 1)  # young history: choices widen
            or self._fitted_last < first  # a gap longer than the window: start afresh
            or last < self._fitted_last  # time went backwards
        )

    def _first_bucket(self, last_complete: int) -> int | None:
        if not self._n:
            return None
        lo = self._lo
        if lo > last_complete:
            return None
        return max(lo, last_complete - self.max_points + 1)

    def _history(self, first: int, last: int) -> np.ndarray:
        """Mean rate per bucket first..last; NaN where a bucket holds no sample."""
        out = np.full(max(last - first + 1, 0), np.nan, dtype=np.float64)
        lo, hi = max(first, self._hi - self._cap + 1), min(last, self._hi)
        at = lo - first
        for a, b in self._slots(lo, hi):
            c = self._counts[a:b]
            held = c > 0
            out[at:at + b - a][held] = self._sums[a:b][held] / c[held]
            at += b - a
        for j, (total, count) in self._old.items():
            if first <= j <= last:
                out[j - first] = total / count
        return out

    def _forecast(
        self, first: int, last: int, steps: int, quantile: float, deferred: bool
    ) -> RateForecast:
        n = last - first + 1
        fitted = self._fitted
        due = self._due(first, last)
        if due and deferred and fitted is not None and first <= self._fitted_last <= last:
            due = False  # keep the old parameters for now: append below
        else:
            deferred = False
        if due:
            fitted = self._fit(self._history(first, last))
            self.fits += 1
            self._fit_last = last
            self._fit_n = n
        elif last > self._fitted_last:
            assert fitted is not None
            fitted = fitted.append(self._history(self._fitted_last + 1, last))
            self.appends += 1
        assert fitted is not None
        self._fitted = fitted
        self._fitted_first = first
        self._fitted_last = last
        result = self._summarise(fitted.forecast(steps, quantile), steps, n, last)
        if deferred:
            result = replace(result, note="; ".join(p for p in (result.note, "refit deferred") if p))
        return result

    def _fit(self, history: np.ndarray) -> FittedForecaster:
        memo = self.fit_memo
        key = b""
        if memo is not None:
            settings = repr((self.step_s, self.method, self.seasonalities_s, self.horizon)).encode()
            key = settings + b"|" + history.tobytes()  # exact (a digest would need hashlib here)
            hit = memo.get(key)
            if hit is not None:
                return hit
        fitted = fit(history, step_seconds=self.step_s, method=self.method, seasonalities_s=self.seasonalities_s,
                     horizon=self.horizon)
        if memo is not None:
            memo[key] = fitted
        return fitted

    def _summarise(self, fc: Forecast, steps: int, n: int, last: int) -> RateForecast:
        mean = fc.mean[np.isfinite(fc.mean)]
        upper = fc.upper[np.isfinite(fc.upper)]
        if len(mean) == 0:
            return self._fallback(last - n + 1, last, steps, fc.note or "no forecast")
        # Rates are non-negative; the upper bound never sits below the mean.
        m = max(float(np.max(mean)), 0.0)
        u = max(float(np.max(upper)) if len(upper) else m, m)
        note = fc.note
        gap = last - self._last_observed(last)
        if gap > 0:
            note = "; ".join(p for p in (note, f"no samples in the last {gap} buckets") if p)
        return RateForecast(m, u, fc.method, note, steps, n)

    def _last_observed(self, last: int) -> int:
        """The newest bucket within max_points before `last` that holds a sample (else `last`)."""
        if self._hi - self._cap < last <= self._hi and self._counts[last % self._cap]:
            return last  # `last` itself holds a sample (most calls): no scan
        first = last - self.max_points
        top = min(last, self._hi)
        while top >= max(first, self._hi - self._cap + 1):  # the ring, newest first, 64 at a time
            lo = max(first, self._hi - self._cap + 1, top - 63)
            held = self._in_ring(lo, top)
            if held:
                return held[-1]
            top = lo - 1
        old = [j for j in self._old if first <= j <= last]
        return max(old) if old else last

    def _fallback(self, first: int, last: int, steps: int, why: str) -> RateForecast:
        h = self._history(first, last)
        finite = h[np.isfinite(h)]
        v = float(finite[-1]) if len(finite) else 0.0
        return RateForecast(v, v, "last-value", f"{why}; using last observed rate", steps, len(h))
