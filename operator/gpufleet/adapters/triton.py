"""Triton directly, through tritonclient (HTTP): model readiness, and a fallback metrics source.

- `model_ready` asks Triton whether a model is ready, telling "not ready" (False) from "cannot ask"
  (None). Promotion does not call it: it trusts pod Ready, which the Deployments make mean model
  ready (a readinessProbe on /v2/models/<model>/ready unless the template declares its own, see
  gpufleet.adapters.manifests.serving_defaults).
- `TritonStats` reads each pod's cumulative inference statistics and turns the difference between two
  reads into request rate and mean queue time: the signals the operator can still get when
  Prometheus is down. Like the Prometheus adapter, every failure is a missing value, never an
  exception and never a zero, and its summary (status, Events) is a short cause per kind of failure
  with a count of pods, without addresses or error bodies (those go to the operator's log).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import tritonclient.http as triton_http

from gpufleet.core.types import Observation

log = logging.getLogger(__name__)


def _client(url: str, timeout_s: float) -> Any:
    # tritonclient.http wants host:port without a scheme.
    address = url.removeprefix("http://").rstrip("/")
    return triton_http.InferenceServerClient(address, connection_timeout=timeout_s, network_timeout=timeout_s)


def cause(exc: BaseException, *, timeout_s: float) -> str:
    """A short, stable cause of a failed Triton request (no address, no body)."""
    chain: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo and len(chain) < 8:
        e = todo.pop(0)
        chain.append(e)
        todo += [x for x in (e.__cause__, e.__context__) if isinstance(x, BaseException) and x not in chain]
    text = " ".join(str(e) for e in chain)
    if any(isinstance(e, ConnectionRefusedError) for e in chain) or "Connection refused" in text:
        return "unreachable (connection refused)"
    if any(isinstance(e, TimeoutError) for e in chain) or "timed out" in text.lower():
        return f"timeout after {timeout_s:g}s"
    if any(isinstance(e, OSError) for e in chain):
        return "unreachable (connection failed)"
    status = getattr(exc, "status", None)
    code = status() if callable(status) else None
    if code:
        return f"error answer (HTTP {code})"
    return f"request failed ({type(exc).__name__})"


def model_ready(url: str, model: str, *, timeout_s: float = 2.0) -> bool | None:
    """True if the server and `model` are ready; False if the server answers but the model is not
    (loading, failed, unknown); None if the server cannot be reached."""
    client = None
    try:
        client = _client(url, timeout_s)
        # is_model_ready answers False for an unknown model (HTTP 400), raises when unreachable.
        return bool(client.is_server_ready()) and bool(client.is_model_ready(model))
    except Exception as exc:  # noqa: BLE001 - connection refused, timeout, DNS, protocol errors
        log.debug("model_ready(%s, %s): %s", url, model, exc)
        return None
    finally:
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing a broken connection must not fail the check
                pass


@dataclass(frozen=True)
class Counters:
    """One pod's cumulative counters for a model (all versions summed), as Triton reports them."""

    success: int  # requests that completed successfully
    queue_count: int
    queue_ns: int
    request_ns: int  # end-to-end time of successful requests

    @classmethod
    def from_statistics(cls, stats: Mapping[str, Any], model: str) -> Counters | None:
        entries = [m for m in stats.get("model_stats", []) if m.get("name") == model]
        if not entries:
            return None

        def total(kind: str, key: str) -> int:
            return sum(int(m.get("inference_stats", {}).get(kind, {}).get(key, 0)) for m in entries)

        return cls(success=total("success", "count"), queue_count=total("queue", "count"),
                   queue_ns=total("queue", "ns"), request_ns=total("success", "ns"))

    def since(self, earlier: Counters) -> Counters:
        """Increase since `earlier`; a counter that went down means the pod restarted, and then (like
        Prometheus's rate) the whole current value counts as the increase."""
        if (self.success < earlier.success or self.queue_count < earlier.queue_count
                or self.queue_ns < earlier.queue_ns or self.request_ns < earlier.request_ns):
            return self
        return Counters(success=self.success - earlier.success, queue_count=self.queue_count - earlier.queue_count,
                        queue_ns=self.queue_ns - earlier.queue_ns, request_ns=self.request_ns - earlier.request_ns)


@dataclass
class TritonStats:
    """MetricsPort over Triton's own inference statistics, read from every pod of a service.

    Signals are means over the time between two `observe` calls. They are reported only when every
    current endpoint was read now and also on the previous call: a pod that could not be read, or a
    new pod with no earlier read, would make the sums undercount, and an undercount looks like less
    load (a reason to scale down). Queue depth is always missing: the statistics have no gauge.
    """

    endpoints: Sequence[str]  # host:port (or http://host:port) of each pod's HTTP endpoint
    model: str
    timeout_s: float = 2.0
    available: bool = False  # did the last observe() read every endpoint?
    errors: dict[str, str] = field(default_factory=dict)  # per endpoint: why it is missing (short cause)
    _previous: dict[str, Counters] = field(default_factory=dict)
    _previous_at: float | None = None
    _logged: dict[str, str] = field(default_factory=dict)  # endpoint -> the cause last logged

    def _read(self, url: str) -> Counters | None:
        client = None
        try:
            client = _client(url, self.timeout_s)
            counters = Counters.from_statistics(client.get_inference_statistics(self.model), self.model)
        except Exception as exc:  # noqa: BLE001 - unreachable pod, timeout, unknown model (HTTP 400)
            self.errors[url] = cause(exc, timeout_s=self.timeout_s)
            if self._logged.get(url) != self.errors[url]:  # the detail once per cause, not every tick
                log.info("Triton statistics of %s from %s: %s: %s", self.model, url, type(exc).__name__, exc)
                self._logged[url] = self.errors[url]
            return None
        finally:
            if client is not None:
                try:
                    client.close()
                except Exception:  # noqa: BLE001
                    pass
        if counters is None:
            self.errors[url] = "no statistics for the model"
        else:
            self._logged.pop(url, None)
        return counters

    def observe(self, *, now: float) -> Observation:
        self.errors = {}
        self._logged = {u: c for u, c in self._logged.items() if u in self.endpoints}
        current = {url: c for url in self.endpoints if (c := self._read(url)) is not None}
        previous, previous_at = self._previous, self._previous_at
        self._previous, self._previous_at = current, now
        self.available = bool(self.endpoints) and len(current) == len(self.endpoints)
        if not self.available:
            return Observation()
        if previous_at is None or now <= previous_at or any(url not in previous for url in current):
            if previous_at is not None:
                self.errors["interval"] = "new endpoints since the last read: rates from the next read"
            return Observation(sampled_at=now)  # fresh, but no interval to take a difference over yet
        deltas = [current[url].since(previous[url]) for url in current]
        success = sum(d.success for d in deltas)
        queued = sum(d.queue_count for d in deltas)
        return Observation(
            sampled_at=now,
            request_rate=success / (now - previous_at),
            # No request finished in the interval: no mean to report (not zero: nothing was measured).
            queue_time_ms=sum(d.queue_ns for d in deltas) / queued / 1e6 if queued else None,
            # The same per-request mean as the built-in latency_mean_ms query (never a p95).
            latency_mean_ms=sum(d.request_ns for d in deltas) / success / 1e6 if success else None,
        )

    def summary(self) -> str:
        """Each cause once, with how many pods it took: the same text while the causes stay."""
        if not self.endpoints and not self.errors:
            return "no serving pod to read"
        if not self.errors:
            return "all endpoints read"
        interval = self.errors.get("interval")
        by_cause: dict[str, int] = {}
        for key, text in self.errors.items():
            if key != "interval":
                by_cause[text] = by_cause.get(text, 0) + 1
        parts = [f"{n} of {len(self.endpoints)} pods: {text}" for text, n in sorted(by_cause.items())]
        return "; ".join(parts + ([interval] if interval else []))
