"""The chaos suite's convergence budget (tests/chaos/harness.budget_s): two intervals, plus what no
operator can shorten, each only when the trial needed it: a cold start when a pod had to be
created after the fault cleared, a drain timeout when a pod on a node going away was still there
(judge counts those pods)."""

from __future__ import annotations

from typing import Any

from gpufleet.adapters.manifests import ANNOTATION_DRAINING, LABEL_SERVICE, LABEL_SERVING
from tests.chaos.fleet import Snapshot, judge
from tests.builders import make_spec
from tests.chaos.harness import DRAIN_S, INTERVAL_S, READY_S, budget_s, up_steps


def test_the_budget_adds_a_cold_start_and_a_drain_only_when_needed() -> None:
    assert budget_s(new_pods=False, drained=False) == 2 * INTERVAL_S
    assert budget_s(new_pods=True, drained=False) == 2 * INTERVAL_S + READY_S
    # a spot notice: the replacement starts, then the noticed pod drains (make-before-break)
    assert budget_s(new_pods=True, drained=True) == 2 * INTERVAL_S + READY_S + DRAIN_S
    # a scale-up the spec's step limit spreads over two ticks: one interval more
    assert budget_s(new_pods=True, drained=False, up_steps=2) == 3 * INTERVAL_S + READY_S


def test_up_steps_follow_the_specs_step_limit() -> None:
    """The chaos services' scale-up from 2 to 8 under the default limit (4 pods or 100 %, the more):
    2 -> 6 -> 8, two ticks; from 6, one; a scale-down or no change, one."""
    spec = make_spec()
    assert up_steps(spec, 2, 8) == 2 and up_steps(spec, 6, 8) == 1 and up_steps(spec, 2, 6) == 1
    assert up_steps(spec, 8, 5) == 1 and up_steps(spec, 0, 0) == 1
    wide = make_spec(scaling={"scaleUp": {"maxStepReplicas": 8}})
    assert up_steps(wide, 2, 8) == 1


def pod(name: str, node: str, *, draining: float | None = None) -> dict[str, Any]:
    annotations = {ANNOTATION_DRAINING: str(draining)} if draining is not None else {}
    return {"metadata": {"name": name, "labels": {LABEL_SERVICE: "svc", LABEL_SERVING: "true"},
                         "annotations": annotations, "creationTimestamp": "2026-01-01T00:00:00Z",
                         "ownerReferences": [{"name": "rs", "controller": True}]},
            "spec": {"nodeName": node},
            "status": {"podIP": f"10.0.0.{len(name)}", "conditions": [{"type": "Ready", "status": "True"}]}}


def test_judge_counts_the_pods_left_on_nodes_going_away() -> None:
    isvc = {"metadata": {"uid": "u"}, "status": {"lastDecision": {"time": "2026-01-01T00:00:10Z", "desired": 1}}}
    deployment = {"metadata": {"name": "svc-ondemand", "ownerReferences": [{"uid": "u", "controller": True}]},
                  "spec": {"replicas": 2}}
    rs = {"metadata": {"name": "rs", "ownerReferences": [{"name": "svc-ondemand", "controller": True}]}}
    snap = Snapshot(pods=[pod("a", "od-0"), pod("b", "spot-0", draining=1767225609.0)], deployments=[deployment],
                    replicasets=[rs], slices=[], services={"svc": isvc})
    j = judge(snap, "svc", since=1767225605.0, need_serving=1, drain_limit_s=60, leaving_nodes=frozenset({"spot-0"}),
              now=1767225611.0)
    assert j.on_leaving == 1 and not j.converged and "1 on leaving nodes" in j.why
