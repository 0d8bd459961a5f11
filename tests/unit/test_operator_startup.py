"""What the operator does at startup, before any handler or service loop runs."""

from __future__ import annotations

import kopf

from gpufleet import kopf_app
from gpufleet.adapters.kube import Kube


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
