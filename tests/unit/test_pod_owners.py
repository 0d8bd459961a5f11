"""The pod watch cache counts only pods made by the service's own Deployments (issue 17): a pod
that merely carries `gpufleet.io/inference-service=<name>` is never counted, promoted or deleted."""

from __future__ import annotations

import asyncio
from typing import Any

from gpufleet.adapters.manifests import LABEL_SERVICE, LABEL_SERVING
from gpufleet.adapters.pods import owned_by_fleet
from gpufleet.kopf_app import gpufleet_pods


def pod(name: str, owner: dict[str, Any] | None, template_hash: str | None = "5d8f7c9b6") -> dict[str, Any]:
    labels = {LABEL_SERVICE: "chat", LABEL_SERVING: "true",
              **({"pod-template-hash": template_hash} if template_hash else {})}
    meta: dict[str, Any] = {"name": name, "namespace": "ns", "labels": labels}
    if owner is not None:
        meta["ownerReferences"] = [{"controller": True, **owner}]
    return {"metadata": meta, "spec": {"nodeName": "n1"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}


def rs(name: str) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": name, "uid": "u"}


def test_only_the_services_own_replicasets_pods_count() -> None:
    assert owned_by_fleet(pod("chat-ondemand-5d8f7c9b6-x2k9p", rs("chat-ondemand-5d8f7c9b6")), "chat")
    assert owned_by_fleet(pod("chat-spot-5d8f7c9b6-x2k9p", rs("chat-spot-5d8f7c9b6")), "chat")
    assert not owned_by_fleet(pod("chat-0", None), "chat")  # made by hand, the label copied
    assert not owned_by_fleet(pod("chat-v2-5d8f7c9b6-x2k9p", rs("chat-v2-5d8f7c9b6")), "chat")  # a look-alike Deployment
    assert not owned_by_fleet(pod("a", rs("chat-spot-ondemand-5d8f7c9b6")), "chat")  # service chat-spot's pods
    assert not owned_by_fleet(pod("a", rs("chat-ondemand-5d8f7c9b6"), template_hash="other"), "chat")
    assert not owned_by_fleet(pod("a", {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "chat-ondemand"}), "chat")
    assert not owned_by_fleet(pod("a", {"apiVersion": "batch/v1", "kind": "Job", "name": "chat-ondemand-5d8f7c9b6"}), "chat")


def test_the_watch_cache_leaves_out_pods_it_does_not_own() -> None:
    def index(body: dict[str, Any]) -> dict[Any, Any]:
        return asyncio.run(gpufleet_pods(body=body, namespace="ns", labels=body["metadata"]["labels"],  # type: ignore[arg-type]
                                         gpufleet_pods={}))

    assert index(pod("chat-0", None)) == {}
    own = index(pod("chat-ondemand-5d8f7c9b6-x2k9p", rs("chat-ondemand-5d8f7c9b6")))
    assert list(own) == [("ns", "chat")] and own[("ns", "chat")]["metadata"]["name"] == "chat-ondemand-5d8f7c9b6-x2k9p"
