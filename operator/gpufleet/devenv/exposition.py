"""Latency histograms, summaries and gauges in the real exporters' exposition formats, for the
emulator (gpufleet.emulator) to serve per pod:

- Triton's first-response histogram (`nv_inference_first_response_histogram_ms`, decoupled models
  with `--metrics-config histogram_latencies=true`; Triton's default buckets) and request-latency
  summary (`nv_inference_request_summary_us`, `--metrics-config summary_latencies=true`; quantiles
  0.5/0.9/0.95/0.99/0.999 over a sliding window), labelled `model`, `version`;
- TensorRT-LLM's own histograms (`tensorrt_llm.metrics.MetricsCollector`: `trtllm_e2e_request_latency_seconds`,
  `trtllm_time_to_first_token_seconds`, `trtllm_time_per_output_token_seconds`, with its default
  buckets), labelled `model_name`, `engine_type`;
- the TensorRT-LLM backend's KV-cache block gauges (`nv_trt_llm_kv_cache_block_metrics`);
- the DCGM exporter's `DCGM_FI_DEV_GPU_UTIL` (percent, per GPU). The `pod` and `namespace` labels
  DCGM's pod mapping adds come from the scrape target here (the emulator serves one endpoint per pod).

Counts are fluid (fractions of requests), written as floats, as prometheus_client writes them.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

# Triton's default first-response buckets, ms (server docs: 100, 500, 2000, 5000, +Inf).
TRITON_TTFT_BUCKETS_MS = (100.0, 500.0, 2000.0, 5000.0)
TRITON_SUMMARY_QUANTILES = (0.5, 0.9, 0.95, 0.99, 0.999)  # Triton 2.51's defaults, as it serves them
SUMMARY_WINDOW_S = 60.0
# tensorrt_llm/metrics/collector.py defaults, seconds.
TRTLLM_E2E_BUCKETS_S = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
                        120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)
TRTLLM_TTFT_BUCKETS_S = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
                         10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
TRTLLM_TPOT_BUCKETS_S = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                         20.0, 40.0, 80.0)


@dataclass
class Histogram:
    """A cumulative Prometheus histogram with weighted (fluid) observations."""

    bounds: Sequence[float]
    counts: list[float] = field(default_factory=list)  # per bucket, the last one +Inf
    total: float = 0.0
    count: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0.0] * (len(self.bounds) + 1)

    def observe(self, value: float, weight: float = 1.0) -> None:
        if weight <= 0:
            return
        self.counts[bisect.bisect_left(self.bounds, value)] += weight
        self.total += value * weight
        self.count += weight

    def lines(self, name: str, labels: str, *, help_text: str) -> list[str]:
        out = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        cumulative = 0.0
        for le, n in zip([*(f"{b:g}" for b in self.bounds), "+Inf"], self.counts, strict=True):
            cumulative += n
            out.append(f'{name}_bucket{{{labels},le="{le}"}} {cumulative:.3f}')
        out += [f"{name}_count{{{labels}}} {self.count:.3f}", f"{name}_sum{{{labels}}} {self.total:.6f}"]
        return out


@dataclass
class Summary:
    """A Prometheus summary: cumulative count and sum, quantiles over the last `window_s` seconds
    (weighted observations; NaN quantiles with none in the window, as prometheus-cpp writes)."""

    window_s: float = SUMMARY_WINDOW_S
    quantiles: Sequence[float] = TRITON_SUMMARY_QUANTILES
    recent: deque[tuple[float, float, float]] = field(default_factory=deque)  # (time, value, weight)
    total: float = 0.0
    count: float = 0.0

    def observe(self, now: float, value: float, weight: float = 1.0) -> None:
        if weight <= 0:
            return
        self.recent.append((now, value, weight))
        self.total += value * weight
        self.count += weight

    def _window(self, now: float) -> list[tuple[float, float]]:
        """(value, weight) of the observations within the window, sorted by value."""
        while self.recent and self.recent[0][0] < now - self.window_s:
            self.recent.popleft()
        return sorted((v, w) for _, v, w in self.recent)

    def quantile(self, q: float, now: float, pairs: list[tuple[float, float]] | None = None) -> float:
        pairs = self._window(now) if pairs is None else pairs
        weight = sum(w for _, w in pairs)
        if weight <= 0:
            return float("nan")
        seen = 0.0
        for value, w in pairs:
            seen += w
            if seen >= q * weight:
                return value
        return pairs[-1][0]

    def lines(self, name: str, labels: str, now: float, *, help_text: str) -> list[str]:
        out = [f"# HELP {name} {help_text}", f"# TYPE {name} summary"]
        pairs = self._window(now)  # sorted once for every quantile
        out += [f'{name}{{{labels},quantile="{q:g}"}} {self.quantile(q, now, pairs):.3f}' for q in self.quantiles]
        out += [f"{name}_count{{{labels}}} {self.count:.3f}", f"{name}_sum{{{labels}}} {self.total:.3f}"]
        return out


# A request's latency relative to the pod's typical one: (factor, share of requests). A fixed,
# skewed spread, so that quantiles differ from the mean (p95 lies between 1.5x and 2.5x).
SPREAD = ((0.5, 0.2), (0.8, 0.3), (1.0, 0.3), (1.5, 0.15), (2.5, 0.05))


@dataclass
class PodLatencies:
    """One emulated pod's latency series in every exporter's shape."""

    triton_ttft_ms: Histogram = field(default_factory=lambda: Histogram(TRITON_TTFT_BUCKETS_MS))
    triton_request_us: Summary = field(default_factory=Summary)
    e2e_s: Histogram = field(default_factory=lambda: Histogram(TRTLLM_E2E_BUCKETS_S))
    ttft_s: Histogram = field(default_factory=lambda: Histogram(TRTLLM_TTFT_BUCKETS_S))
    tpot_s: Histogram = field(default_factory=lambda: Histogram(TRTLLM_TPOT_BUCKETS_S))

    def record(self, now: float, done: float, *, wait_s: float, service_s: float, first_s: float,
               per_token_s: float) -> None:
        """`done` requests finished after waiting `wait_s` in the queue: spread over SPREAD."""
        for factor, share in SPREAD:
            n = done * share
            e2e = wait_s + service_s * factor
            ttft = wait_s + first_s * factor
            self.triton_ttft_ms.observe(ttft * 1e3, n)
            self.triton_request_us.observe(now, e2e * 1e6, n)
            self.e2e_s.observe(e2e, n)
            self.ttft_s.observe(ttft, n)
            self.tpot_s.observe(per_token_s * factor, n)

    def lines(self, model: str, now: float) -> list[str]:
        triton = f'model="{model}",version="1"'
        llm = f'engine_type="trtllm",model_name="{model}"'
        return [
            *self.triton_ttft_ms.lines("nv_inference_first_response_histogram_ms", triton,
                                       help_text="Duration from request to first response in milliseconds"),
            *self.triton_request_us.lines("nv_inference_request_summary_us", triton, now,
                                          help_text="Summary of inference request duration in microseconds"),
            *self.e2e_s.lines("trtllm_e2e_request_latency_seconds", llm,
                              help_text="Histogram of end to end request latency in seconds."),
            *self.ttft_s.lines("trtllm_time_to_first_token_seconds", llm,
                               help_text="Histogram of time to first token in seconds."),
            *self.tpot_s.lines("trtllm_time_per_output_token_seconds", llm,
                               help_text="Histogram of time per output token in seconds."),
        ]


KV_BLOCKS = 4096  # blocks per replica
KV_TOKENS_PER_BLOCK = 64
KV_AT_FULL_BATCH = 0.9  # a full batch of average requests holds this share of the blocks


def kv_cache_lines(model: str, in_flight: float, slots: int) -> list[str]:
    """nv_trt_llm_kv_cache_block_metrics: blocks held in proportion to the requests in flight."""
    fraction = min(1.0, KV_AT_FULL_BATCH * max(in_flight, 0.0) / max(slots, 1))
    used = round(fraction * KV_BLOCKS)
    labels = f'model="{model}",version="1"'
    name = "nv_trt_llm_kv_cache_block_metrics"
    values = {"fraction": f"{fraction:.4f}", "tokens_per": KV_TOKENS_PER_BLOCK, "used": used,
              "free": KV_BLOCKS - used, "max": KV_BLOCKS}
    return [f"# HELP {name} TRT LLM KV cache block metrics", f"# TYPE {name} gauge",
            *(f'{name}{{kv_cache_block_type="{k}",{labels}}} {v}' for k, v in values.items())]


def dcgm_lines(in_flight: float, slots: int, *, uuid: str, hostname: str) -> list[str]:
    """DCGM_FI_DEV_GPU_UTIL of the pod's one GPU: here the batch occupancy, a stand-in for the
    share of time a kernel ran (percent, an integer as DCGM reports it)."""
    util = round(100 * min(1.0, max(in_flight, 0.0) / max(slots, 1)))
    labels = (f'gpu="0",UUID="{uuid}",device="nvidia0",modelName="NVIDIA L4",Hostname="{hostname}",'
              f'container="triton"')
    return ["# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).", "# TYPE DCGM_FI_DEV_GPU_UTIL gauge",
            f"DCGM_FI_DEV_GPU_UTIL{{{labels}}} {util}"]
