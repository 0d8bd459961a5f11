"""spec.capacity.classes on the real cluster (issue 18 item 5): KWOK nodes of two GPU products,
MIG-partitioned nodes advertising nvidia.com/mig-3g.40gb, the operator placing a service on its
cheapest class, and falling back to the next class when the cheapest one cannot be had (no node
of its product: its pods stay Pending past the class's pendingTimeoutSeconds), then returning
once nodes of that product exist; and a GPUQuota per GPU product over a class-mixed service, which
then serves on its other class."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.integration.support import Cluster, condition, explained, loop_service, pods, set_load, status
from tests.support import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus]

L4 = "NVIDIA-L4"  # the session cluster's on-demand nodes (hack/cluster.sh)
A100 = "NVIDIA-A100-SXM4-80GB"
H100 = "NVIDIA-H100-80GB-HBM3"
MIG = "nvidia.com/mig-3g.40gb"
TAINT = "gpufleet.test/classes"  # keeps the other tests' pods off this module's nodes
MIG_NODES = ("gpu-a100-mig-0", "gpu-a100-mig-1")
H100_NODES = ("gpu-h100-0",)
PENDING_TIMEOUT_S = 10
RETURN_AFTER_S = 20
INTERVAL_S = 2


def node(name: str, product: str, resources: dict[str, str]) -> dict[str, Any]:
    """A KWOK GPU node (as hack/cluster.sh makes them) of `product`, tainted for this module."""
    alloc = {"cpu": "48", "memory": "192Gi", "pods": "110", **resources}
    labels = {"type": "kwok", "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
              "kubernetes.io/hostname": name, "karpenter.sh/capacity-type": "on-demand",
              "nvidia.com/gpu.product": product}
    if any(k.startswith("nvidia.com/mig-") for k in resources):
        labels["nvidia.com/mig.strategy"] = "mixed"  # GPU feature discovery's label on MIG nodes
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": "fake"}, "labels": labels},
            "spec": {"taints": [{"key": TAINT, "value": "true", "effect": "NoSchedule"}]},
            "status": {"capacity": alloc, "allocatable": alloc}}


def add_nodes(cluster: Cluster, nodes: list[dict[str, Any]]) -> None:
    for n in nodes:
        cluster.apply(n)
    names = [n["metadata"]["name"] for n in nodes]
    wait_for(lambda: all(any(c["type"] == "Ready" and c["status"] == "True"
                             for c in (cluster.get("node", n, "") or {}).get("status", {}).get("conditions", []))
                         for n in names), timeout=60, what=f"nodes {names} Ready")


@pytest.fixture(scope="module")
def mig_nodes(cluster: Cluster) -> Iterator[None]:
    """Two A100 80GB nodes partitioned into 3g.40gb slices (two per GPU, one GPU each)."""
    add_nodes(cluster, [node(n, A100, {MIG: "2"}) for n in MIG_NODES])
    yield
    cluster.kubectl("delete", "node", *MIG_NODES, *H100_NODES, "--ignore-not-found", "--wait=false", check=False)


TOLERATE = [{"key": TAINT, "operator": "Exists", "effect": "NoSchedule"}]


def classes_service(namespace: str, name: str, classes: list[dict[str, Any]]) -> dict[str, Any]:
    obj = loop_service(namespace, name)
    spec = obj["spec"]
    spec["replicas"] = {"min": 2, "max": 6}
    spec["capacity"] = {"classes": classes}  # replaces the onDemand/spot form
    spec["scaling"]["intervalSeconds"] = INTERVAL_S
    return obj


def l4_class(price: float) -> dict[str, Any]:
    return {"name": "l4", "pricePerReplicaHour": price, "resources": {"nvidia.com/gpu": 1},
            "nodeSelector": {"nvidia.com/gpu.product": L4, "karpenter.sh/capacity-type": "on-demand"}}


def mig_class(price: float) -> dict[str, Any]:
    return {"name": "mig", "pricePerReplicaHour": price, "resources": {MIG: 1},
            "nodeSelector": {"nvidia.com/gpu.product": A100}, "tolerations": TOLERATE}


def h100_class(price: float) -> dict[str, Any]:
    return {"name": "h100", "pricePerReplicaHour": price, "resources": {"nvidia.com/gpu": 1},
            "nodeSelector": {"nvidia.com/gpu.product": H100}, "tolerations": TOLERATE,
            "pendingTimeoutSeconds": PENDING_TIMEOUT_S, "returnAfterSeconds": RETURN_AFTER_S}


def running(cluster: Cluster, namespace: str, name: str, capacity_class: str) -> list[dict[str, Any]]:
    """Ready pods of one class (not terminating)."""
    return [p for p in pods(cluster, namespace, name)
            if p["metadata"]["labels"].get("gpufleet.io/capacity-class") == capacity_class
            and not p["metadata"].get("deletionTimestamp")
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))]


def node_product(cluster: Cluster, node_name: str) -> str:
    return str(((cluster.get("node", node_name, "") or {}).get("metadata", {}).get("labels", {}))
               .get("nvidia.com/gpu.product"))


def class_status(cluster: Cluster, namespace: str, name: str) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in status(cluster, namespace, name).get("replicas", {}).get("classes") or []}


def size(cluster: Cluster, namespace: str, deployment: str) -> int:
    return int(((cluster.get("deployment", deployment, namespace) or {}).get("spec") or {}).get("replicas") or 0)


def mix_events(cluster: Cluster, namespace: str, name: str) -> list[str]:
    return [e.get("message", "") for e in cluster.list("events", namespace)
            if e["involvedObject"]["name"] == name and e["reason"] == "CapacityMix"]


def test_a_service_lands_on_its_cheapest_class(cluster: Cluster, namespace: str, operator: Any, emulator: str,
                                              mig_nodes: None) -> None:
    # L4 is cheaper: both replicas on L4 nodes, none on the MIG slices.
    cluster.apply(classes_service(namespace, "cheap", [l4_class(1.0), mig_class(1.9)]))
    set_load(emulator, namespace, "cheap", 50)
    with explained(cluster, namespace, "cheap"):
        wait_for(lambda: len(running(cluster, namespace, "cheap", "l4")) == 2, timeout=90, what="2 Ready L4 pods")
    assert {node_product(cluster, p["spec"]["nodeName"]) for p in running(cluster, namespace, "cheap", "l4")} == {L4}
    assert size(cluster, namespace, "cheap-mig") == 0
    per_class = wait_for(lambda: (c := class_status(cluster, namespace, "cheap")).get("l4", {}).get("ready") == 2 and c,
                         timeout=30, what="status.replicas.classes")
    assert per_class["l4"]["pricePerReplicaHour"] == 1.0 and per_class["l4"]["state"] == "available"
    assert per_class["mig"]["desired"] == 0

    # A MIG slice cheaper than an L4: the replicas go to the A100 MIG nodes, asking for a slice.
    cluster.apply(classes_service(namespace, "sliced", [l4_class(1.0), mig_class(0.4)]))
    set_load(emulator, namespace, "sliced", 50)
    with explained(cluster, namespace, "sliced"):
        wait_for(lambda: len(running(cluster, namespace, "sliced", "mig")) == 2, timeout=90, what="2 Ready MIG pods")
    on = running(cluster, namespace, "sliced", "mig")
    assert {p["spec"]["nodeName"] for p in on} <= set(MIG_NODES)
    limits = on[0]["spec"]["containers"][0]["resources"]["limits"]
    assert limits.get(MIG) == "1" and "nvidia.com/gpu" not in limits
    assert size(cluster, namespace, "sliced-l4") == 0


def test_a_stock_out_falls_back_to_the_next_class_and_returns(cluster: Cluster, namespace: str, operator: Any,
                                                             emulator: str, mig_nodes: None) -> None:
    # H100 is cheapest but no node of that product exists: its pods stay Pending.
    cluster.apply(classes_service(namespace, "stock", [h100_class(1.0), mig_class(1.9)]))
    set_load(emulator, namespace, "stock", 50)
    pending = wait_for(lambda: [p for p in pods(cluster, namespace, "stock")
                                if p["metadata"]["labels"].get("gpufleet.io/capacity-class") == "h100"],
                       timeout=60, what="the h100 class's pods")
    assert all(not p["spec"].get("nodeName") for p in pending)
    seen = time.monotonic()
    # Within its timeout (plus the decision interval and the API round trips), the mix moves to mig.
    with explained(cluster, namespace, "stock"):
        wait_for(lambda: size(cluster, namespace, "stock-mig") >= 2, timeout=PENDING_TIMEOUT_S + 4 * INTERVAL_S + 10,
                 what="the mig Deployment grown after the h100 stock-out")
    took = time.monotonic() - seen
    with explained(cluster, namespace, "stock"):
        wait_for(lambda: len(running(cluster, namespace, "stock", "mig")) == 2, timeout=90, what="2 Ready MIG pods")
        wait_for(lambda: size(cluster, namespace, "stock-h100") == 0, timeout=30, what="the h100 Deployment at 0")
    state = class_status(cluster, namespace, "stock")["h100"]
    assert state["state"] in ("stocked-out", "backing-off"), state
    assert "Pending past 10s" in state["reason"] or "after" in state["reason"], state
    events = wait_for(lambda: [m for m in mix_events(cluster, namespace, "stock") if "h100 stocked out" in m],
                      timeout=30, what="a CapacityMix Event naming the stock-out")
    assert "serving on mig at 1.9x the cost per request" in events[0], events
    print(f"fallback decided {took:.1f}s after the Pending h100 pods were seen; event: {events[0]}")

    # Nodes of the product appear: after returnAfterSeconds the service returns to h100, make-before-break.
    add_nodes(cluster, [node(n, H100, {"nvidia.com/gpu": "4"}) for n in H100_NODES])
    with explained(cluster, namespace, "stock"):
        wait_for(lambda: len(running(cluster, namespace, "stock", "h100")) == 2, timeout=RETURN_AFTER_S * 4 + 60,
                 what="2 Ready h100 pods after the return")
        wait_for(lambda: size(cluster, namespace, "stock-mig") == 0, timeout=60, what="the mig Deployment back to 0")
    assert {node_product(cluster, p["spec"]["nodeName"]) for p in running(cluster, namespace, "stock", "h100")} \
        == {H100}
    assert class_status(cluster, namespace, "stock")["h100"]["state"] == "available"


def test_a_two_class_service_moves_onto_a_list(cluster: Cluster, namespace: str, operator: Any, emulator: str,
                                               mig_nodes: None) -> None:
    # The onDemand/spot form first: pods on `<svc>-ondemand`.
    legacy = loop_service(namespace, "moved")
    legacy["spec"]["replicas"] = {"min": 2, "max": 6}
    cluster.apply(legacy)
    set_load(emulator, namespace, "moved", 50)
    with explained(cluster, namespace, "moved"):
        wait_for(lambda: len(running(cluster, namespace, "moved", "on-demand")) == 2, timeout=90,
                 what="2 Ready on-demand pods")
    # The same service with a list: the on-demand pods serve until the mig ones are Ready, then go.
    cluster.apply(classes_service(namespace, "moved", [mig_class(1.9)]))
    with explained(cluster, namespace, "moved"):
        wait_for(lambda: len(running(cluster, namespace, "moved", "mig")) == 2, timeout=90, what="2 Ready MIG pods")
        wait_for(lambda: size(cluster, namespace, "moved-ondemand") == 0
                 and not running(cluster, namespace, "moved", "on-demand"), timeout=120,
                 what="the on-demand Deployment drained to 0")
    assert all(p["metadata"]["labels"].get("gpufleet.io/serving") == "true"
               for p in running(cluster, namespace, "moved", "mig"))


def test_a_quota_per_gpu_product_moves_a_class_mix_to_its_other_class(cluster: Cluster, namespace: str,
                                                                      operator: Any, emulator: str,
                                                                      mig_nodes: None) -> None:
    # One L4 GPU under the quota (a node pool per GPU product); the service's cheapest mix is 2 x l4.
    quota = f"q-{uuid.uuid4().hex[:8]}"
    pool = "l4/nvidia.com/gpu"
    cluster.apply({"apiVersion": "gpufleet.io/v1alpha1", "kind": "GPUQuota", "metadata": {"name": quota},
                   "spec": {"intervalSeconds": 1, "tiers": [{"name": "paid"}],
                            "nodePools": [{"name": "l4", "nodeSelector": {"nvidia.com/gpu.product": L4},
                                           "limits": {"nvidia.com/gpu": 1}}]}})
    try:
        obj = classes_service(namespace, "capped", [l4_class(1.0), mig_class(1.9)])
        obj["spec"]["quota"] = {"name": quota, "tier": "paid"}
        cluster.apply(obj)
        set_load(emulator, namespace, "capped", 50)
        # Its two replicas' worth: one on the L4 the quota leaves it, the other on a MIG slice.
        with explained(cluster, namespace, "capped"):
            wait_for(lambda: len(running(cluster, namespace, "capped", "l4")) == 1
                     and len(running(cluster, namespace, "capped", "mig")) == 1
                     and size(cluster, namespace, "capped-l4") == 1, timeout=120,
                     what="1 Ready l4 pod and 1 Ready mig pod, the l4 Deployment at 1")
        reason = class_status(cluster, namespace, "capped")["l4"]["reason"]
        assert f"held by quota {quota}: {pool} 1/1; 2 wanted" in reason, reason
        # (Before the first arbitration the service holds what it runs: an earlier mix may name 0/0.)
        wait_for(lambda: [m for m in mix_events(cluster, namespace, "capped")
                          if f"quota {quota}: {pool} 1/1, serving on mig at 1.9x the cost per request" in m],
                 timeout=30, what="a CapacityMix Event naming the quota's full L4 pool and the fallback")
        # All the capacity it wants, on another product: not QuotaLimited; the quota counts per pool.
        cond = wait_for(lambda: (c := condition(status(cluster, namespace, "capped"), "QuotaLimited"))
                        .get("reason") == "WithinQuota" and c, timeout=30, what="QuotaLimited=False, WithinQuota")
        assert cond["status"] == "False" and "on 1 x l4 + 1 x mig" in cond["message"], cond
        q = wait_for(lambda: (st := (cluster.get("gpuquota", quota, "default") or {}).get("status") or {})
                     .get("allocated") == {pool: 1} and st.get("used") == {pool: 1} and st, timeout=60,
                     what="the GPUQuota's allocation and use per pool")
        assert q["services"][0]["reason"] == "WithinQuota", q
        assert size(cluster, namespace, "capped-l4") == 1
    finally:
        cluster.kubectl("delete", "gpuquota", quota, "--wait=false", check=False)


def test_kubectl_explain_describes_every_class_field(cluster: Cluster) -> None:
    from gpufleet.api.models import CapacityClassSpec, ClassStatus

    def explain(path: str) -> str:
        return wait_for(lambda: (o := cluster.kubectl("explain", path, check=False).stdout) and "DESCRIPTION" in o and o,
                        timeout=60, what=f"kubectl explain {path}")

    assert "cheapest mix" in explain("inferenceservice.spec.capacity.classes")
    for path, model in (("spec.capacity.classes", CapacityClassSpec), ("status.replicas.classes", ClassStatus)):
        for field in model.model_fields.values():
            words = (field.description or "").split()
            assert words, f"{path}.{field.alias} has no description"
            out = " ".join(explain(f"inferenceservice.{path}.{field.alias}").split())
            assert " ".join(words[:5]) in out, (path, field.alias, out[:400])


@pytest.mark.parametrize("capacity, words", [
    ({"spot": {"enabled": True}}, "set spot.enabled false (or leave spot out) and list a class with spot: true"),
    ({"onDemand": {"nodeSelector": {"karpenter.sh/capacity-type": "on-demand"}}},
     "put nodeSelector and tolerations on each class, not on onDemand"),
    ({"classes": [{"name": "l4"}]}, "needs pricePerReplicaHour or a product"),
])
def test_the_api_server_refuses_classes_beside_the_two_class_placement(cluster: Cluster, namespace: str,
                                                                       capacity: dict[str, Any], words: str) -> None:
    obj = classes_service(namespace, "refused", [l4_class(1.0)])
    obj["spec"]["capacity"].update(capacity)
    proc = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(obj), check=False)
    assert proc.returncode != 0 and words in proc.stderr, proc.stderr
    assert "spec.capacity" in proc.stderr, proc.stderr
