"""Each signal of issue 19 (a true p95 beside the counters' mean, TTFT and inter-token latency,
the KV cache, DCGM's GPU utilisation): it changes the decision when it should, and it is *missing*
(None, safe mode where it is key), never zero, when the server does not export it. Then the
exposition the emulator serves, as Prometheus' own parser reads it, and what status says."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from gpufleet.adapters.metrics import (
    NO_SAMPLE,
    NOT_A_NUMBER,
    NO_SERIES_OF,
    PrometheusMetrics,
    queries_for,
)
from gpufleet.api.models import InferenceServiceSpec
from gpufleet.control.status import observed_status
from gpufleet.core.policy import REASONS, GpufleetPolicy
from gpufleet.core.types import Observation, Plan, PolicyMemory
from gpufleet.devenv.exposition import SPREAD, Histogram, Summary
from gpufleet.emulator import Emulator, PodCounters
from tests.builders import NOW, deep_merge, make_spec, obs, serving_fleet
from tests.strategies import NOW as PROPERTY_NOW
from tests.strategies import SETTINGS, fleets, fresh_observations, memories, specs

POLICY = GpufleetPolicy()
FAST_UP = {"scaling": {"scaleUp": {"maxStepPercent": 1000, "maxStepReplicas": 100}}}


def decide(spec: InferenceServiceSpec, observation: Observation, serving: int = 4) -> Plan:
    plan, _ = POLICY.decide(spec=spec, observation=observation, forecast=None, fleet=serving_fleet(serving),
                            memory=PolicyMemory(last_serving=serving), now=NOW)
    return plan


def spec(**extra: Any) -> InferenceServiceSpec:
    return make_spec(**deep_merge(FAST_UP, extra))


# --- the decision: each signal moves it, and its absence is missing, not zero ------------------------

@pytest.mark.parametrize(("slo", "field", "high", "label"), [
    ({"latencyP95Ms": 1000}, "latency_p95_ms", 2500.0, "latency p95 2500ms > 1000ms"),
    ({"latencyMeanMs": 1000}, "latency_mean_ms", 2500.0, "latency mean 2500ms > 1000ms"),
    ({"ttftP95Ms": 800}, "ttft_p95_ms", 2000.0, "ttft p95 2000ms > 800ms"),
    ({"itlP95Ms": 40}, "itl_p95_ms", 100.0, "inter-token p95 100ms > 40ms"),
    ({"gpuUtilizationPercent": 60}, "gpu_utilization", 90.0, "gpu utilisation 90% > 60% target x 4 serving: need 6"),
])
def test_a_targeted_signal_scales_up_and_is_key_when_missing(slo: dict[str, Any], field: str, high: float,
                                                              label: str) -> None:
    s = spec(slo=slo, replicas={"min": 1})
    busy = decide(s, obs(request_rate=20.0, **{field: high}))
    assert busy.serving > 4 and label in busy.message and busy.reason in REASONS
    assert busy.reason == ("GpuUtilization" if field == "gpu_utilization" else "Latency")
    # Within target: no need from it (the rate's 2 replicas, held by the scale-down window).
    calm = decide(s, obs(request_rate=20.0, **{field: high / 10}))
    assert calm.serving == 4 and not calm.safe_mode
    # Missing (the server exports no such series): safe mode names it, no scale-down; a zero would
    # have read as "within target".
    blind = decide(s, obs(request_rate=20.0))
    assert blind.safe_mode and f"{field} missing" in blind.message and blind.serving == 4


def test_the_mean_never_stands_in_for_the_p95() -> None:
    # A p95 target with only the counters' mean read: missing (safe mode), whatever the mean says.
    s = spec(slo={"latencyP95Ms": 1000})
    plan = decide(s, obs(request_rate=20.0, latency_mean_ms=5000.0))
    assert plan.safe_mode and "latency_p95_ms missing" in plan.message and plan.reason == "SafeMode"
    # And a mean target is not judged by a p95.
    m = spec(slo={"latencyMeanMs": 1000})
    assert decide(m, obs(request_rate=20.0, latency_p95_ms=5000.0)).safe_mode


def test_kv_cache_scales_out_before_it_is_full_and_is_not_key() -> None:
    llm = spec(model={"name": "llama", "backend": "tensorrtllm"}, replicas={"min": 1})
    assert llm.slo.kv_cache_utilization == 0.85  # the default threshold
    full = decide(llm, obs(request_rate=20.0, kv_cache_utilization=0.95))
    assert (full.reason, full.serving) == ("KVCache", 5), full.message  # ceil(4 x 0.95 / 0.85)
    assert "kv cache 0.95 > 0.85 target x 4 serving: need 5" in full.message
    # Below the threshold the queue and the rate decide; missing is not safe mode (it only adds).
    assert decide(llm, obs(request_rate=20.0, kv_cache_utilization=0.5)).reason != "KVCache"
    absent = decide(llm, obs(request_rate=20.0))
    assert not absent.safe_mode and absent.reason != "KVCache"
    # The threshold is the user's: 1.0 turns the signal off.
    off = spec(model={"name": "llama", "backend": "tensorrtllm"}, slo={"kvCacheUtilization": 1.0})
    assert decide(off, obs(request_rate=20.0, kv_cache_utilization=1.0)).reason != "KVCache"


def test_kv_cache_holds_the_floor_a_scale_down_may_not_cross() -> None:
    # 8 serving at 0.8 of the cache: 6 would put each at 1.07 (ceil(8 x 0.8 / 0.85) = 8).
    llm = spec(model={"name": "llama", "backend": "tensorrtllm"}, replicas={"min": 1},
               scaling={"scaleDown": {"stabilizationSeconds": 0, "maxStepPercent": 100}})
    plan = decide(llm, obs(request_rate=1.0, kv_cache_utilization=0.8), serving=8)
    assert plan.serving == 8 and plan.reason == "KVCache", plan.message


# --- the adapter: what Prometheus answers becomes each field, or missing with a cause ----------------

class Canned:
    """custom_query() answering by query text; an unknown query: no series."""

    def __init__(self, answers: dict[str, list[dict[str, Any]]]) -> None:
        self.answers = answers

    def custom_query(self, query: str, timeout: float | None = None) -> list[dict[str, Any]]:
        return self.answers.get(query, [])


def one(value: str) -> list[dict[str, Any]]:
    return [{"metric": {}, "value": [NOW, value]}]


LLM = InferenceServiceSpec.model_validate({
    "model": {"name": "llama", "backend": "tensorrtllm"},
    "slo": {"latencyP95Ms": 2000, "latencyMeanMs": 1500, "ttftP95Ms": 500, "itlP95Ms": 50, "gpuUtilizationPercent": 70},
    "template": {"spec": {"containers": [{"name": "t", "image": "i"}]}}})


def port_with(values: dict[str, str], spec_: InferenceServiceSpec = LLM) -> PrometheusMetrics:
    queries = queries_for(spec_, namespace="prod", name="llm")
    port = PrometheusMetrics(url="http://prom:9090", queries=queries, stale_after_s=60)
    port._client = Canned({queries[k]: one(v) for k, v in values.items()})  # type: ignore[assignment]
    return port


def test_every_signal_is_read_into_its_own_field() -> None:
    port = port_with({"sampled_at": str(NOW - 1), "queue_depth": "3", "queue_time_ms": "12", "request_rate": "40",
                      "latency_p95_ms": "1800", "latency_mean_ms": "900", "ttft_p95_ms": "300", "itl_p95_ms": "35",
                      "kv_cache_utilization": "0.7", "gpu_utilization": "64"})
    o = port.observe(now=NOW)
    assert (o.latency_p95_ms, o.latency_mean_ms, o.ttft_p95_ms, o.itl_p95_ms) == (1800, 900, 300, 35)
    assert (o.kv_cache_utilization, o.gpu_utilization) == (0.7, 64) and port.summary() == "all signals read"


def test_absent_series_are_missing_with_what_to_turn_on() -> None:
    port = port_with({"sampled_at": str(NOW - 1), "queue_depth": "3", "request_rate": "40", "queue_time_ms": "NaN"})
    o = port.observe(now=NOW)
    for f in ("latency_p95_ms", "latency_mean_ms", "ttft_p95_ms", "itl_p95_ms", "kv_cache_utilization",
              "gpu_utilization", "queue_time_ms"):
        assert getattr(o, f) is None, f  # missing, never 0.0
    assert port.errors["latency_p95_ms"] == NO_SERIES_OF["latency_p95_ms"]
    assert "summary_latencies=true" in port.errors["latency_p95_ms"] and "slo.latencyMeanMs" in port.errors["latency_p95_ms"]
    assert "DCGM_FI_DEV_GPU_UTIL" in port.errors["gpu_utilization"]
    assert port.errors["queue_time_ms"] == NOT_A_NUMBER  # NaN: no request in the window, not "no series"
    # With those values the core is blind for a scale-down (latency and GPU targets unobservable).
    plan, _ = POLICY.decide(spec=LLM, observation=o, forecast=None, fleet=serving_fleet(4),
                            memory=PolicyMemory(last_serving=4), now=NOW)
    assert plan.safe_mode and "latency_p95_ms missing" in plan.message and "gpu_utilization missing" in plan.message


def test_signals_without_a_target_are_not_queried() -> None:
    plain = InferenceServiceSpec.model_validate({"model": {"name": "chat"},
                                                 "template": {"spec": {"containers": [{"name": "t", "image": "i"}]}}})
    q = queries_for(plain, namespace="prod", name="chat")
    assert not {"latency_p95_ms", "latency_mean_ms", "ttft_p95_ms", "itl_p95_ms", "kv_cache_utilization",
                "gpu_utilization"} & set(q)
    llm = queries_for(LLM, namespace="prod", name="llm")
    assert "histogram_quantile(0.95" in llm["itl_p95_ms"] and 'model_name="llama"' in llm["itl_p95_ms"]
    assert llm["latency_p95_ms"].startswith("1000 * histogram_quantile(0.95, sum by (le) (rate(trtllm_e2e")
    assert ' or max(nv_inference_request_summary_us{' in llm["latency_p95_ms"]  # Triton's summary otherwise
    assert "nv_inference_request_duration_us" in llm["latency_mean_ms"]  # the mean: counters only
    assert "model=" not in llm["gpu_utilization"] and 'namespace="prod"' in llm["gpu_utilization"]


def test_no_sample_says_what_is_missing_and_since_when() -> None:
    """The demo's first Warning read `sampled_at: no data`: now which signal, what is missing, since when."""
    port = port_with({})
    for t in (0.0, 5.0):  # the same text on the next tick: one Warning, not one per tick
        assert port.observe(now=NOW + t) == Observation()
        assert port.summary() == f"sampled_at: {NO_SAMPLE} (since 1970-01-01T02:46:40Z)"
    assert "nv_inference_pending_request_count" in NO_SAMPLE and "every signal missing" in NO_SAMPLE


# --- status: a p95 and a mean are two fields ---------------------------------------------------------

def test_status_names_the_mean_and_the_p95_apart() -> None:
    st = observed_status(Observation(sampled_at=NOW, latency_mean_ms=900.0, kv_cache_utilization=0.5))
    dumped = st.model_dump(by_alias=True, exclude_none=True)
    assert dumped["latencyMeanMs"] == 900.0 and "latencyP95Ms" not in dumped
    assert dumped["kvCacheUtilization"] == 0.5


# --- the emulator's exposition, read by Prometheus' own text parser ---------------------------------

def test_emulator_serves_every_exporter_shape() -> None:
    emu = Emulator(loads={}, slots=128, service_time_s=3.0, first_token_s=0.3, per_token_s=0.02)
    emu.pods["ns/chat-ondemand-5d9f7c8b6-x2k4q"] = PodCounters(capacity_class="on-demand", in_flight=100, pending=40)
    for i in range(10):
        emu.advance(NOW + i, 1.0)
    text = emu.render("ns/chat-ondemand-5d9f7c8b6-x2k4q", now=NOW + 10)
    assert text is not None
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["nv_inference_first_response_histogram_ms"].type == "histogram"
    assert families["nv_inference_request_summary_us"].type == "summary"
    for name in ("trtllm_e2e_request_latency_seconds", "trtllm_time_to_first_token_seconds",
                 "trtllm_time_per_output_token_seconds"):
        assert families[name].type == "histogram"
        assert {s.labels.get("model_name") for s in families[name].samples} == {"chat"}
    kv = {s.labels["kv_cache_block_type"]: s.value for s in families["nv_trt_llm_kv_cache_block_metrics"].samples}
    assert 0 < kv["fraction"] <= 1 and kv["used"] + kv["free"] == kv["max"]
    gpu = families["DCGM_FI_DEV_GPU_UTIL"].samples
    assert len(gpu) == 1 and 0 <= gpu[0].value <= 100 and "pod" not in gpu[0].labels  # the target's label
    # Counts agree across shapes: every finished request is in every histogram once.
    success = next(s.value for s in families["nv_inference_request_success"].samples)
    count = next(s.value for s in families["trtllm_e2e_request_latency_seconds"].samples if s.name.endswith("_count"))
    assert count == pytest.approx(success, abs=1.0)


def test_summary_quantile_and_histogram_agree_on_the_spread() -> None:
    hist, summ = Histogram((1.0, 2.0, 3.0, 4.0, 6.0)), Summary(window_s=60)
    for factor, share in SPREAD:  # one unit of latency, spread as the emulator spreads it
        hist.observe(2.0 * factor, 100 * share)
        summ.observe(NOW, 2.0 * factor, 100 * share)
    assert summ.quantile(0.95, NOW) == 3.0  # 95 % of requests at or below 1.5 x 2.0
    assert summ.quantile(0.5, NOW) == pytest.approx(1.6)  # the mean (1.98) is neither
    assert hist.count == pytest.approx(100) and hist.total / hist.count == pytest.approx(1.98)
    assert math.isnan(summ.quantile(0.95, NOW + 120))  # nothing in the window: NaN, as Triton writes


# --- the demo's forecast: 30 rps shown while 358 arrive ---------------------------------------------

def test_forecast_status_says_what_it_is_built_from() -> None:
    """The forecaster reads complete 1-minute means of the (1-minute) request rate: after a quick
    rise it trails what arrives by up to two minutes, which in the demo's 60x-compressed day is two
    hours of load. That is its design (and what the simulator's numbers were measured with); what
    was wrong is that status did not say so. Now the note names the data the forecast stands on."""
    from gpufleet.api.models import Forecast
    from gpufleet.control.forecast import ForecastAdapter
    from gpufleet.control.status import forecast_status

    adapter = ForecastAdapter(Forecast())
    start = 1_796_282_400.0  # a minute boundary
    for t in range(0, 600, 5):
        adapter.observe(start + t, 30.0)
    for t in range(600, 655, 5):  # the ramp, all within the current minute
        adapter.observe(start + t, 358.0)
    forecast = adapter.forecast(now=start + 655, horizon_s=25, quantile=0.9)
    assert forecast is not None and forecast.mean_rps < 100  # the last complete minute's level
    st = forecast_status(forecast)
    assert st.note is not None and st.note.endswith("from 60s means of the request rate up to 2026-12-03T07:30:00Z")


# --- every new signal keeps the need monotone in load -----------------------------------------------

NEW_FIELDS = ("latency_p95_ms", "latency_mean_ms", "itl_p95_ms", "kv_cache_utilization", "gpu_utilization")


@SETTINGS
@given(spec=specs(), observation=fresh_observations(), fleet=fleets(), memory=memories(),
       field=st.sampled_from(NEW_FIELDS), a=st.floats(0, 5000), b=st.floats(0, 5000))
def test_more_of_any_new_signal_never_asks_for_less(spec: InferenceServiceSpec, observation: Observation,
                                                   fleet: Any, memory: PolicyMemory, field: str, a: float,
                                                   b: float) -> None:
    targeted = spec.model_copy(update={
        "model": spec.model.model_copy(update={"backend": "tensorrtllm"}),
        "slo": spec.slo.model_copy(update={"latency_p95_ms": 1500, "latency_mean_ms": 800, "itl_p95_ms": 60,
                                           "gpu_utilization_percent": 70, "kv_cache_utilization": 0.85})})
    lo_v, hi_v = sorted((a, b))
    low, _ = POLICY.decide(spec=targeted, observation=replace(observation, **{field: lo_v}), forecast=None,
                           fleet=fleet, memory=memory, now=PROPERTY_NOW)
    high, _ = POLICY.decide(spec=targeted, observation=replace(observation, **{field: hi_v}), forecast=None,
                            fleet=fleet, memory=memory, now=PROPERTY_NOW)
    assert not low.safe_mode and not high.safe_mode  # every signal read: the property is about load
    assert low.serving <= high.serving
