"""A shared GPUQuota on the real cluster: three services in two tiers under one quota, load driven
through the emulated Triton pods and the real Prometheus; and services naming a quota or tier
that does not exist."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from gpufleet.core.stabilize import AFTER_BACKLOG_S
from tests.integration.support import (
    STABILIZE_S,
    Cluster,
    condition,
    desired,
    desired_together,
    loop_service,
    pending,
    set_load,
    status,
)
from tests.support import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus]

GPUS = 6


def gpu_quota(name: str, gpus: int = GPUS) -> dict[str, Any]:
    return {"apiVersion": "gpufleet.io/v1alpha1", "kind": "GPUQuota", "metadata": {"name": name},
            "spec": {"limits": {"nvidia.com/gpu": gpus}, "intervalSeconds": 1,
                     "tiers": [{"name": "paid"}, {"name": "batch", "preemptible": False}]}}


def member(namespace: str, name: str, quota: str, tier: str) -> dict[str, Any]:
    obj = loop_service(namespace, name)
    obj["spec"]["quota"] = {"name": quota, "tier": tier}
    return obj


def quota_status(cluster: Cluster, name: str) -> dict[str, Any]:
    obj = cluster.get("gpuquota", name, "default") or {}
    result: dict[str, Any] = obj.get("status", {})
    return result


def quota_condition(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return condition(status(cluster, namespace, name), "QuotaLimited")


@pytest.fixture
def quota_name(cluster: Cluster) -> Any:
    name = f"q-{uuid.uuid4().hex[:8]}"  # cluster-scoped: unique per test
    yield name
    cluster.kubectl("delete", "gpuquota", name, "--wait=false", check=False)


def test_low_tier_held_at_its_floor_while_the_high_tier_scales(
    cluster: Cluster, operator: Path, emulator: str, namespace: str, quota_name: str
) -> None:
    cluster.apply(gpu_quota(quota_name))
    names = ("chat", "batch-a", "batch-b")
    cluster.apply(member(namespace, "chat", quota_name, "paid"))
    for n in names[1:]:
        cluster.apply(member(namespace, n, quota_name, "batch"))
    # 110 req/s at 100 per replica: two replicas each for the batch services, within the quota. One
    # replica serves ~122 req/s, so no backlog builds while the second starts (at 150 a backlog built,
    # and its queue's need could take a third replica from the quota's spare GPU).
    set_load(emulator, namespace, "batch-a", 110)
    set_load(emulator, namespace, "batch-b", 110)
    wait_for(lambda: all(desired(cluster, namespace, n) == 2 for n in names[1:]), timeout=120,
             what="batch services at 2 replicas")
    wait_for(lambda: quota_condition(cluster, namespace, "batch-a").get("reason") == "WithinQuota", timeout=30,
             what="batch-a QuotaLimited=False, WithinQuota")
    assert quota_condition(cluster, namespace, "batch-a")["status"] == "False"

    # The paid service's load wants 6 replicas; the quota has 6 GPUs, the batch floors keep 2.
    set_load(emulator, namespace, "chat", 550)
    peak = [0]

    def paid_scaled() -> bool:
        sizes = desired_together(cluster, namespace, names)
        peak[0] = max(peak[0], sum(sizes.values()))
        return sizes["chat"] == GPUS - 2 and all(sizes[n] == 1 for n in names[1:])

    wait_for(paid_scaled, timeout=180, what="chat at 4, batch-a and batch-b held at their floor of 1")
    assert peak[0] <= GPUS, f"the services asked for {peak[0]} GPUs together, quota {GPUS}"
    for n in names[1:]:
        cond = quota_condition(cluster, namespace, n)
        assert (cond["status"], cond["reason"]) == ("True", "HeldAtFloor"), cond
        assert quota_name in cond["message"] and "batch" in cond["message"], cond
    wait_for(lambda: quota_condition(cluster, namespace, "chat").get("reason") == "QuotaLimited", timeout=30,
             what="chat QuotaLimited (it wants 6, gets 4)")
    assert condition(status(cluster, namespace, "chat"), "Ready")["status"] == "True"
    # The quota's own status: allocated and used per tier and service.
    wait_for(lambda: {t["name"]: t["allocated"].get("nvidia.com/gpu") for t in quota_status(cluster, quota_name)
                      .get("tiers", [])} == {"paid": 4.0, "batch": 2.0}, timeout=30, what="GPUQuota status per tier")
    st = quota_status(cluster, quota_name)
    assert st["allocated"] == {"nvidia.com/gpu": GPUS} and st["limits"] == {"nvidia.com/gpu": GPUS}
    rows = {s["name"]: s for s in st["services"]}
    assert set(rows) == set(names) and rows["batch-a"]["reason"] == "HeldAtFloor" and rows["chat"]["desired"] >= 5
    assert st["services"][0]["tier"] == "paid"  # highest tier first

    # Load falls: the paid service scales in (after its stabilisation window), the batch tier is
    # released.
    set_load(emulator, namespace, "chat", 50)
    sizes: list[dict[str, int]] = []

    def released() -> bool:
        sizes.append(desired_together(cluster, namespace, names))
        return sizes[-1]["chat"] == 1 and all(sizes[-1][n] >= 2 for n in names[1:])

    try:
        wait_for(released, timeout=240, what="chat at 1, batch services released above their floor")
    finally:
        print("sizes while releasing:", sizes[::5], {n: quota_condition(cluster, namespace, n) for n in names})
    assert max(sum(s.values()) for s in sizes) <= GPUS, sizes
    # Each batch service's condition clears once it has its 2 again. Had a backlog built at one
    # replica (a slow machine), it wants more until the queue drains and for AFTER_BACKLOG_S after:
    # wait on the emulator's queue first.
    for n in names[1:]:
        wait_for(lambda n=n: pending(emulator, namespace, n) < 8, timeout=400, what=f"{n}'s backlog drained")
    for n in names[1:]:
        wait_for(lambda n=n: quota_condition(cluster, namespace, n).get("status") == "False",
                 timeout=AFTER_BACKLOG_S + STABILIZE_S + 60, what=f"{n} no longer QuotaLimited once its backlog drained")


def test_missing_quota_or_tier_is_reported_and_caps_nothing(
    cluster: Cluster, operator: Path, emulator: str, namespace: str, quota_name: str
) -> None:
    cluster.apply(gpu_quota(quota_name, gpus=1))
    cluster.apply(member(namespace, "orphan", f"{quota_name}-absent", "paid"))
    cluster.apply(member(namespace, "typo", quota_name, "gold"))
    for name, reason, text in (("orphan", "QuotaNotFound", f"GPUQuota {quota_name}-absent not found"),
                               ("typo", "TierNotFound", "has no tier gold (tiers: paid, batch)")):
        wait_for(lambda name=name, reason=reason: quota_condition(cluster, namespace, name).get("reason") == reason,
                 timeout=60, what=f"{name}: QuotaLimited reason {reason}")
        cond = quota_condition(cluster, namespace, name)
        assert cond["status"] == "Unknown" and text in cond["message"], cond
        wait_for(lambda name=name: condition(status(cluster, namespace, name), "Ready").get("status") == "True",
                 timeout=60, what=f"{name} Ready")
        events = [e for e in cluster.list("events", namespace) if e["involvedObject"]["name"] == name]
        assert any(e["reason"] == reason and e["type"] == "Warning" for e in events), [e["reason"] for e in events]
    # Not capped: the quota of 1 GPU does not hold "typo" (its tier is not in it) below its load's need.
    set_load(emulator, namespace, "typo", 300)
    wait_for(lambda: desired(cluster, namespace, "typo") >= 3, timeout=90, what="typo scales past the quota")


def test_admission_refuses_a_quota_that_caps_nothing_or_repeats_a_tier(cluster: Cluster, quota_name: str) -> None:
    bad = gpu_quota(quota_name)
    del bad["spec"]["limits"]
    proc = cluster.apply(bad, check=False)
    assert proc.returncode != 0 and "a GPUQuota caps something" in proc.stderr, proc.stderr
    dup = gpu_quota(quota_name)
    dup["spec"]["tiers"] = [{"name": "paid"}, {"name": "paid"}]
    proc = cluster.apply(dup, check=False)
    assert proc.returncode != 0 and "spec.tiers[1]" in proc.stderr and "Duplicate value" in proc.stderr, proc.stderr
    odd = gpu_quota(quota_name)
    odd["spec"]["limits"] = {"nvidia.com/gpu": -1}
    proc = cluster.apply(odd, check=False)
    assert proc.returncode != 0 and "spec.limits.nvidia.com/gpu" in proc.stderr, proc.stderr
    assert cluster.get("gpuquota", quota_name, "default") is None
