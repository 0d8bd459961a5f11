"""Each capacity class learns its own requests/s per replica (issue 18 item 1).

The metrics adapter reads, for a service with spec.capacity.classes, the request rate per pod in
place of the scalar sum (no query added per tick) and reports the sum over each class's serving
pods (Observation.class_request_rate), missing when one of them is not in the answer; the policy
feeds those samples to core.classes.learn_class_rps (PolicyMemory.learned_class_rps, persisted in
status.memory); the mix plans a class without targetRpsPerReplica at its learned figure, and
status.replicas.classes shows it (learnedRpsPerReplica)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from gpufleet.adapters.metrics import PrometheusMetrics, classes_pod_regex, metrics_port
from gpufleet.api.models import InferenceServiceSpec
from gpufleet.control import memory as codec
from gpufleet.control.status import replica_status
from gpufleet.core.policy import GpufleetPolicy
from gpufleet.core.types import FleetState, Observation, PolicyMemory, Replica, ReplicaState
from tests.unit.test_metrics_security import labels, needs_promtool, promtool

NOW = 1_767_225_600.0
L4_PODS = ["chat-l4-7665c88c7f-7r4h2", "chat-l4-7665c88c7f-b2kx9", "chat-l4-7665c88c7f-k2x9p"]
H100_PODS = ["chat-h100-5d9f7c8b6-x2k4q", "chat-h100-5d9f7c8b6-q9z8w"]
STANDBY = "chat-l4-7665c88c7f-m4n5b"  # Ready, out of the Service: its rate is not the class's load
LEGACY = "chat-ondemand-66c9bcbdf5-8w7mx"  # the two-class form's pod, serving until it drains
OTHER = "chat-l4-ondemand-66c9bcbdf5-8w7mx"  # service chat-l4's pod: not this service's


def spec(*, target: float | None = None, scaling: dict[str, Any] | None = None,
         metrics: dict[str, Any] | None = None, slo: dict[str, Any] | None = None) -> InferenceServiceSpec:
    l4: dict[str, Any] = {"name": "l4", "pricePerReplicaHour": 1.0}
    if target is not None:
        l4["targetRpsPerReplica"] = target
    return InferenceServiceSpec.model_validate({
        "model": {"name": "m"},
        "template": {"spec": {"containers": [{"name": "triton", "image": "t"}]}},
        "replicas": {"min": 2, "max": 40},
        "scaling": {"targetUtilization": 0.8, **(scaling or {})},
        "metrics": metrics or {}, "slo": slo or {},
        "capacity": {"classes": [l4, {"name": "h100", "pricePerReplicaHour": 4.0}]}})


# -- the adapter -------------------------------------------------------------------------------------


class Canned:
    """custom_query() answering a port's own queries from {key: [(pod or None, value)]}; records
    the keys asked."""

    def __init__(self, queries: dict[str, str], answers: dict[str, list[tuple[str | None, float]]]) -> None:
        self.key = {q: k for k, q in queries.items()}
        self.answers = answers
        self.asked: list[str] = []

    def custom_query(self, query: str, timeout: float | None = None) -> list[dict[str, Any]]:
        key = self.key[query]
        self.asked.append(key)
        return [{"metric": {"pod": p} if p else {}, "value": [NOW, str(v)]} for p, v in self.answers.get(key, [])]


def rates() -> dict[str, float]:
    return {**dict.fromkeys(L4_PODS, 10.0), **dict.fromkeys(H100_PODS, 50.0), STANDBY: 0.5, LEGACY: 7.0}


def answers(per_pod: dict[str, float], reporting: list[str] | None = None) -> dict[str, list[tuple[str | None, float]]]:
    return {"sampled_at": [(None, NOW)], "queue_depth": [(None, 40.0)], "queue_time_ms": [(None, 3.0)],
            "request_rate": [(None, sum(per_pod.values()))],
            "request_rate_by_pod": list(per_pod.items()),
            "reporting": [(p, NOW) for p in (reporting if reporting is not None else per_pod)],
            "window_coverage": [(p, 1.0) for p in (reporting if reporting is not None else per_pod)]}


def port(s: InferenceServiceSpec, answered: dict[str, list[tuple[str | None, float]]], *,
         serving: list[str] | None = None, classes: bool = True) -> tuple[PrometheusMetrics, Canned]:
    names = s.capacity.class_names()
    made = metrics_port(s, namespace="ns", name="chat", default_url="http://prom:9090",
                        serving=None if serving is None else (lambda: dict.fromkeys(serving, NOW - 600)),
                        pod_re=classes_pod_regex("chat", names), classes=names if classes else ())
    assert isinstance(made, PrometheusMetrics)
    canned = Canned(made.queries, answered)
    made._client = canned
    return made, canned


SERVING = [*L4_PODS, *H100_PODS, LEGACY]


def test_each_class_is_the_sum_over_its_serving_pods_from_the_query_already_run() -> None:
    p, canned = port(spec(), answers(rates()), serving=SERVING)
    obs = p.observe(now=NOW)
    assert dict(obs.class_request_rate) == {"l4": 30.0, "h100": 100.0}  # the standby's 0.5 left out
    assert obs.request_rate == pytest.approx(137.5)  # every pod's, as the scalar sum
    assert p.available and p.summary() == "all signals read"
    # In place of the scalar rate, not beside it: as many queries per tick as without classes.
    plain, plain_canned = port(spec(), answers(rates()), serving=SERVING, classes=False)
    plain_obs = plain.observe(now=NOW)
    assert "request_rate" not in canned.asked and "request_rate_by_pod" in canned.asked
    assert len(canned.asked) == len(plain_canned.asked)
    assert plain_obs.request_rate == obs.request_rate and plain_obs.class_request_rate == ()


def test_a_class_whose_serving_pod_is_not_in_the_answer_is_missing_not_smaller() -> None:
    per_pod = rates()
    del per_pod[H100_PODS[1]]  # in the queue gauge's scrape, but no rate series
    p, _ = port(spec(), answers(per_pod, reporting=SERVING), serving=SERVING)
    obs = p.observe(now=NOW)
    assert dict(obs.class_request_rate) == {"l4": 30.0, "h100": None}


def test_a_partial_scrape_leaves_every_class_missing() -> None:
    per_pod = rates()
    del per_pod[L4_PODS[0]]
    p, _ = port(spec(), answers(per_pod), serving=SERVING)  # nor in `reporting`: the sums go
    obs = p.observe(now=NOW)
    assert obs.request_rate is None
    assert dict(obs.class_request_rate) == {"l4": None, "h100": None}


def test_a_class_with_no_serving_pod_has_nothing_to_learn_from() -> None:
    p, _ = port(spec(), answers(rates()), serving=L4_PODS)
    assert dict(p.observe(now=NOW).class_request_rate) == {"l4": 30.0, "h100": None}


def test_without_the_serving_pods_a_class_sums_the_pods_that_answer() -> None:
    per_pod = {**rates(), OTHER: 99.0}  # a name another service's pods have: never a class's
    p, _ = port(spec(), answers(per_pod))
    assert dict(p.observe(now=NOW).class_request_rate) == {"l4": 30.5, "h100": 100.0}


def test_a_failed_or_empty_rate_query_is_missing_with_its_cause() -> None:
    p, _ = port(spec(), {**answers(rates()), "request_rate_by_pod": []}, serving=SERVING)
    obs = p.observe(now=NOW)
    assert obs.request_rate is None and dict(obs.class_request_rate) == {"l4": None, "h100": None}
    assert "request_rate: no series of this service's pods" in p.summary()


def test_an_overridden_request_rate_is_read_as_written_and_no_class_rate() -> None:
    s = spec(metrics={"queries": {"requestRate": 'sum(rate(my_requests{pod=~"$pod_re"}[1m]))'}})
    p, canned = port(s, answers(rates()), serving=SERVING)
    obs = p.observe(now=NOW)
    assert "request_rate_by_pod" not in p.queries and "request_rate" in canned.asked
    assert obs.request_rate == pytest.approx(137.5) and obs.class_request_rate == ()


@needs_promtool
def test_prometheus_answers_the_per_pod_query_with_what_the_scalar_one_sums(tmp_path: Path) -> None:
    """In Prometheus' own engine: one series per pod of the service's classes (another service's
    pods left out), and their sum is the scalar request_rate."""
    p, _ = port(spec(), {}, serving=SERVING)
    per_second = {L4_PODS[0]: 10, L4_PODS[1]: 20, H100_PODS[0]: 50, OTHER: 1000}
    series = [{"series": f"nv_inference_request_success{labels(namespace='ns', pod=pod, model='m')}",
               "values": f"0+{rate * 15}x20"} for pod, rate in per_second.items()]
    failed = labels(namespace="ns", pod=L4_PODS[0], model="m", reason="REJECTED")
    series.append({"series": f"nv_inference_request_failure{failed}", "values": "0+15x20"})  # load too
    mine = {L4_PODS[0]: 11, L4_PODS[1]: 20, H100_PODS[0]: 50}
    tests = [
        {"expr": p.queries["request_rate_by_pod"], "eval_time": "5m",
         "exp_samples": [{"labels": labels(pod=pod), "value": v} for pod, v in mine.items()]},
        {"expr": p.queries["request_rate"], "eval_time": "5m",
         "exp_samples": [{"labels": "{}", "value": sum(mine.values())}]},
    ]
    proc = promtool(tmp_path, series, tests)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


# -- the policy, the mix, status and memory ------------------------------------------------------------


def fleet() -> FleetState:
    def rep(name: str, cls: str, state: ReplicaState = ReplicaState.serving) -> Replica:
        return Replica(name, cls, state, NOW - 900, NOW - 800)

    return FleetState(replicas=(*(rep(f"l{i}", "l4") for i in range(3)), *(rep(f"h{i}", "h100") for i in range(2)),
                                rep("s0", "l4", ReplicaState.standby)))


def sample(*, queue_per_replica: float = 8.0, l4: float | None = 30.0, h100: float | None = 100.0,
           latency_p95_ms: float = 200.0) -> Observation:
    """A busy sample: 5 serving replicas at `queue_per_replica` queued each (queueDepthPerReplica 8)."""
    return Observation(sampled_at=NOW, queue_depth=5 * queue_per_replica, queue_time_ms=5.0,
                       request_rate=(l4 or 0.0) + (h100 or 0.0), class_request_rate=(("l4", l4), ("h100", h100)),
                       latency_p95_ms=latency_p95_ms)


def decide(s: InferenceServiceSpec, obs: Observation, memory: PolicyMemory, now: float = NOW) -> Any:
    return GpufleetPolicy().decide(spec=s, observation=obs, forecast=None, fleet=fleet(), memory=memory, now=now)


def test_samples_become_each_class_figure_which_the_next_mix_plans_with_and_status_shows() -> None:
    s = spec()
    plan, memory = decide(s, sample(), PolicyMemory())
    assert dict(memory.learned_class_rps) == {"l4": 10.0, "h100": 50.0}  # rate per serving replica
    # The next decision plans each class at its own figure x targetUtilization (0.8).
    plan, memory = decide(s, sample(), memory, now=NOW + 15)
    assert plan.classes is not None
    planned = {c.name: c.rps_per_replica for c in plan.classes}
    assert planned == pytest.approx({"l4": 8.0, "h100": 40.0})
    status = replica_status(fleet(), {c: plan.by_class(c) for c in plan.class_names()}, plan)
    assert status.classes is not None
    shown = {c.name: c.model_dump(by_alias=True) for c in status.classes}
    assert shown["l4"]["learnedRpsPerReplica"] == 10.0 and shown["h100"]["learnedRpsPerReplica"] == 50.0
    # Later samples move it by the same smoothing as the service's single figure (LEARN_ALPHA 0.2).
    _, memory = decide(s, sample(l4=60.0), memory, now=NOW + 30)
    assert dict(memory.learned_class_rps)["l4"] == pytest.approx(0.8 * 10.0 + 0.2 * 20.0)


def test_the_learned_figures_change_the_cheapest_mix() -> None:
    """Planned at one reference figure, the L4 (1.0/h) is the cheaper per request; learned at 10
    against the H100's 50 requests/s (4.0/h), the H100 is: the mix moves most capacity to it."""
    s = spec()
    first, memory = decide(s, sample(), PolicyMemory())
    assert first.mix_note.startswith("5 x l4 for"), first.mix_note
    assert first.classes is not None and first.classes[1].reason == "unused: 4/h per rps"
    plan, _ = decide(s, sample(), memory, now=NOW + 15)
    assert plan.classes is not None
    l4, h100 = plan.classes
    assert h100.reason.endswith("at 0.1/h per rps") and l4.reason.endswith("at 0.125/h per rps"), plan.mix_note
    assert h100.replicas * h100.rps_per_replica > l4.replicas * l4.rps_per_replica, plan.mix_note


@pytest.mark.parametrize("obs", [
    sample(queue_per_replica=1.0),  # idle replicas: the rate measures idleness, not capacity
    sample(queue_per_replica=30.0),  # a backlog: past the band
    sample(l4=None, h100=None),  # the classes' pods missing from the scrape
    sample(latency_p95_ms=900.0),  # the latency SLO broken
    Observation(sampled_at=NOW, queue_depth=40.0, request_rate=130.0, latency_p95_ms=200.0),  # none per class
], ids=["idle", "backlog", "missing", "slow", "unread"])
def test_only_busy_complete_samples_within_the_slo_teach(obs: Observation) -> None:
    _, memory = decide(spec(slo={"latencyP95Ms": 500}), obs, PolicyMemory())
    assert memory.learned_class_rps == ()


def test_a_class_figure_set_beats_the_learned_one() -> None:
    learned = PolicyMemory(learned_class_rps=(("h100", 50.0), ("l4", 10.0)))
    own, _ = decide(spec(target=25.0), sample(), learned)  # the class's own figure
    assert own.classes is not None
    assert {c.name: c.rps_per_replica for c in own.classes} == pytest.approx({"l4": 20.0, "h100": 40.0})
    # The service's figure is the reference: a class plans with it only until its own is learned.
    service, _ = decide(spec(scaling={"targetRpsPerReplica": 30.0}), sample(), learned)
    assert service.classes is not None
    assert {c.name: c.rps_per_replica for c in service.classes} == pytest.approx({"l4": 8.0, "h100": 40.0})
    fresh, _ = decide(spec(scaling={"targetRpsPerReplica": 30.0}), sample(), PolicyMemory())
    assert fresh.classes is not None
    assert {c.name: c.rps_per_replica for c in fresh.classes} == pytest.approx({"l4": 24.0, "h100": 24.0})
    # Learned all the same, where a class sets its own (status shows what it really carries).
    assert {c.name: c.learned_rps_per_replica for c in own.classes} == {"l4": 10.0, "h100": 50.0}


def test_a_class_removed_from_the_list_is_forgotten() -> None:
    memory = PolicyMemory(learned_class_rps=(("a100", 30.0), ("l4", 10.0)))
    _, after = decide(spec(), Observation(), memory)  # blind: nothing new learned, nothing lost
    assert after.learned_class_rps == (("l4", 10.0),)


def test_the_learned_figures_survive_a_restart_through_status_memory() -> None:
    _, memory = decide(spec(), sample(), PolicyMemory())
    text = codec.encode(memory, {}, now=NOW, keep_s=600)
    restored, _ = codec.decode(text, now=NOW + 60)
    assert restored.learned_class_rps == memory.learned_class_rps == (("h100", 50.0), ("l4", 10.0))
    assert codec.fingerprint(memory, {}) != codec.fingerprint(
        dataclasses.replace(memory, learned_class_rps=(("h100", 80.0), ("l4", 10.0))), {})
    with pytest.raises(codec.MemoryFormatError, match='"crps"'):
        codec.decode('{"v":1,"t":0,"crps":{"l4":"fast"}}', now=NOW)
