"""What the operator does at startup, before any handler or service loop runs."""

from __future__ import annotations

from typing import Any

import kopf

from gpufleet import kopf_app
from gpufleet.adapters.kube import Kube
from gpufleet.adapters.pods import replica_from_pod
from gpufleet.core.rollout import drain_deadline


def test_startup_builds_the_kubernetes_client_before_any_tick() -> None:
    # Built lazily, the client's first use imported its API modules under kopf_app's lock while
    # every first tick and resume handler of a restarted operator waited behind it (make chaos:
    # their first decisions came seconds late). Building it needs no API server.
    before = kopf_app._kube
    kopf_app._kube = None
    try:
        kopf_app.configure(settings=kopf.OperatorSettings())
        assert isinstance(kopf_app._kube, Kube)
    finally:
        kopf_app._kube = before


class Applies:
    """kopf_app.kube() for the resume handler: counts the children it applies."""

    def __init__(self) -> None:
        self.applied: list[str] = []

    def apply_child(self, namespace: str, body: dict[str, Any], *, replicas: int | None = None) -> str:
        self.applied.append(body["kind"])
        return "unchanged"


def resume(observed: int | None, generation: int = 3) -> tuple[Applies, kopf.Patch, str]:
    spec = {"model": {"name": "chat"}, "template": {"spec": {"containers": [{"name": "t", "image": "i"}]}}}
    uid = f"uid-{observed}-{generation}"
    body = kopf.Body({"apiVersion": "gpufleet.io/v1alpha1", "kind": "InferenceService",
                      "metadata": {"name": "chat", "namespace": "ns", "uid": uid, "generation": generation},
                      "spec": spec, "status": {"observedGeneration": observed} if observed is not None else {}})
    kube = Applies()
    before = kopf_app._kube
    kopf_app._kube = kube  # type: ignore[assignment]
    patch = kopf.Patch()
    try:
        kopf_app.reconcile_children(body=body, spec=body.spec, name="chat", namespace="ns", patch=patch,
                                    reason=kopf.Reason.RESUME)
    finally:
        kopf_app._kube = before
    return kube, patch, uid


def test_a_resumed_service_already_reconciled_is_applied_by_its_loop_not_at_once() -> None:
    # A restarted operator resumed every service at once, each applying its children (a GET and an
    # apply each) while the first decisions waited on the same API server (make chaos, kill -9).
    kube, patch, uid = resume(observed=3)
    try:
        assert kube.applied == [] and not patch
        assert kopf_app.RECONCILED[uid] == 3 and uid in kopf_app.RESUMED  # its loop applies them later
    finally:
        kopf_app.RECONCILED.pop(uid, None)
        kopf_app.RESUMED.discard(uid)


def test_a_resumed_service_whose_spec_moved_on_is_applied_at_once() -> None:
    kube, patch, uid = resume(observed=2)
    try:
        assert "Deployment" in kube.applied and patch.status["observedGeneration"] == 3
        assert uid not in kopf_app.RESUMED
    finally:
        kopf_app.RECONCILED.pop(uid, None)


def test_the_drain_deadline_is_the_earliest_drain_start_plus_its_timeout() -> None:
    # The loop is woken then: a drained pod goes at its timeout, not up to an interval later.
    def pod(name: str, since: str | None) -> dict[str, Any]:
        annotations = {} if since is None else {"gpufleet.io/draining-since": since}
        return {"metadata": {"name": name, "annotations": annotations}}

    pods = [pod("a", None), pod("b", "100.5"), pod("c", "90"), pod("d", "junk")]
    assert drain_deadline([replica_from_pod(p, set()) for p in pods], drain_timeout_s=6.0) == 96.0
    assert drain_deadline([replica_from_pod(pod("a", None), set())], drain_timeout_s=6.0) is None
