"""The load test a user runs before configuring a concurrency autoscaler (Knative's KPA).

A Knative user sets the per-pod concurrency target (`autoscaling.knative.dev/target`) from a load
test: drive one replica at the request rate it should carry and read the requests in flight at the
pod (the queue-proxy's concurrency: queued plus executing). `LoadTest.in_flight(rps)` is that
reading for the simulator's replica model at a steady Poisson rate of `rps` per replica:

    in-flight = decoding sequences + requests in prefill
              = rate x mean answer / decode iterations per second   (Little; the same iteration
                model as sim.capacity: prompt chunks share iterations with decoding)
              + rate x mean own-prompt time                          (Little)

It is the figure `sim.capacity.capacity_table` reports as "in-flight per replica" at the capacity
rate, at any rate. In-flight is strongly convex in the rate (decode slows as prompt chunks take a
growing share of the iterations): at 70 % of the capacity rate a replica holds about a third of its
in-flight at capacity, not 70 % of it. A steady Poisson load run through the simulator itself reads
within a few per cent of this figure (tests/unit/test_baselines_kpa.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gpufleet.sim.capacity import _decode_batch
from gpufleet.sim.model import LatencyBook, ReplicaModel

if TYPE_CHECKING:
    from gpufleet.sim.traces import Trace


@dataclass(frozen=True, slots=True)
class LoadTest:
    """One replica of `model` under a steady Poisson load with the trace's request mix."""

    model: ReplicaModel
    mean_in: float  # mean prompt tokens per request
    mean_out: float  # mean answer tokens per request
    prompt_s: float  # mean own-prompt time (LatencyBook.es: prefill at mid batch plus one iteration)

    @classmethod
    def of(cls, model: ReplicaModel, trace: Trace) -> LoadTest:
        """The load test of the trace's request mix (its token-length sample) on `model`."""
        book = LatencyBook(model, trace.in_sample, target_s=1.0)  # es does not depend on the target
        return cls(model=model, mean_in=float(trace.in_sample.mean()), mean_out=float(trace.out_sample.mean()),
                   prompt_s=book.es)

    def in_flight(self, rps_per_replica: float) -> float:
        """Requests in flight per replica (decoding plus in prefill) at a steady `rps_per_replica`."""
        rate = max(float(rps_per_replica), 0.0)
        if rate == 0.0:
            return 0.0
        m = self.model
        rho = rate * self.mean_in / m.prefill_rate(m.max_batch / 2)  # share of iterations carrying a chunk
        return _decode_batch(m, rate, min(rho, 1.0), self.mean_out) + rate * self.prompt_s
