"""The dynamic client's resource lookup runs once per kind, not once per apply (each lookup
searches every discovered API group in Python: a restarted operator's resume handlers spent
most of their time there, holding the GIL its first ticks needed)."""

from __future__ import annotations

from typing import Any

from gpufleet.adapters.kube import Kube
from tests.unit.test_ownership import FakeResource, child


def test_a_kind_is_looked_up_once_for_many_applies() -> None:
    resource = FakeResource(existing=None)
    lookups: list[dict[str, Any]] = []

    def get(**kw: Any) -> FakeResource:
        lookups.append(kw)
        return resource

    kube = Kube.__new__(Kube)
    kube.timeout = (1.0, 1.0)
    kube.budget_s = 1.0
    kube._dynamic = type("D", (), {"resources": type("R", (), {"get": staticmethod(get)})()})()
    for _ in range(5):
        assert kube.apply_child("ns", child()) == "created"
    assert len(lookups) == 1 and len(resource.calls) == 5
