"""The GPUQuota's kopf layer without kopf running (quota_app): what a watch event puts on the
board, when an arbitration is due and when its status is worth a write."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import kopf
import pytest

from gpufleet import quota_app as qa
from gpufleet.api.models import InferenceServiceSpec
from gpufleet.control.quota import Demand

GPU = "nvidia.com/gpu"


def body(name: str, spec: dict[str, Any], generation: int = 1) -> kopf.Body:
    return kopf.Body({"apiVersion": "gpufleet.io/v1alpha1", "kind": "GPUQuota",  # type: ignore[arg-type]
                      "metadata": {"name": name, "generation": generation}, "spec": spec})


def event(kind: str | None, name: str, spec: dict[str, Any], generation: int = 1) -> None:
    b = body(name, spec, generation)
    qa.quota_event(type=kind, name=name, body=b, spec=b.spec)


@pytest.fixture(autouse=True)
def clean() -> Iterator[None]:
    yield
    for name in list(qa._meta):
        event("DELETED", name, {})
    qa.QUOTAS.demands.clear()
    qa.QUOTAS.results.clear()


SPEC = {"limits": {GPU: 4}, "intervalSeconds": 5, "tiers": [{"name": "paid"}, {"name": "free", "preemptible": True}]}


def svc() -> InferenceServiceSpec:
    return InferenceServiceSpec.model_validate({
        "model": {"name": "m"}, "quota": {"name": "q", "tier": "paid"},
        "template": {"spec": {"containers": [{"name": "t", "image": "x", "resources": {"limits": {GPU: 1}}}]}}})


def test_arbitration_runs_each_interval_and_writes_only_what_changed() -> None:
    event(None, "q", SPEC)  # the initial listing
    assert "q" in qa.QUOTAS.quotas
    qa.QUOTAS.publish(Demand("ns/a", "q", "paid", desired=6, floor=1, running=2, spec=svc(), at=100.0))
    (name, status), = qa.arbitrate_due(100.0)
    assert name == "q" and status["allocated"] == {GPU: 4.0} and status["services"][0]["allocated"] == 4
    qa._meta["q"]["written"], qa._meta["q"]["written_at"] = status, 100.0
    assert qa.arbitrate_due(101.0) == []  # not due before intervalSeconds
    assert qa.arbitrate_due(105.0) == []  # due, but nothing material changed
    qa.QUOTAS.publish(Demand("ns/a", "q", "paid", desired=6, floor=1, running=4, spec=svc(), at=106.0))
    (_, status), = qa.arbitrate_due(110.0)
    assert status["used"] == {GPU: 4.0}
    qa._meta["q"]["written"], qa._meta["q"]["written_at"] = status, 110.0
    assert len(qa.arbitrate_due(110.0 + qa.HEARTBEAT_S)) == 1  # a heartbeat once a minute


def test_invalid_spec_keeps_the_last_valid_one_and_says_why() -> None:
    event(None, "q", SPEC)
    event("MODIFIED", "q", {**SPEC, "tiers": [{"name": "a"}, {"name": "a"}]}, generation=2)
    assert qa.QUOTAS.quotas["q"].tiers[0].name == "paid"
    (_, status), = qa.arbitrate_due(100.0)
    ready = status["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec") and "tier names must be unique" in ready["message"]
    assert status["observedGeneration"] == 2


def test_deleted_quota_leaves_the_board() -> None:
    event(None, "q", SPEC)
    event("DELETED", "q", SPEC)
    assert "q" not in qa.QUOTAS.quotas and qa.arbitrate_due(100.0) == []
    v = qa.QUOTAS.verdict("ns/a", "q", "paid", now=100.0)
    assert v.reason == "QuotaNotFound"
