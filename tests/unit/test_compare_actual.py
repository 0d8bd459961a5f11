"""`gpufleet report --compare-actual` (gpufleet.compare_actual): which pods count as what ran, and the
arithmetic of the comparison."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from gpufleet.compare_actual import actual_query, compare, table
from tests.builders import make_spec


def test_what_ran_is_the_services_pods_or_the_shadow_targets() -> None:
    own = actual_query(make_spec(), namespace="prod", name="chat")
    assert own.startswith("count(nv_inference_pending_request_count{") and '"chat-(?:ondemand|spot)-' in own
    shadow = make_spec(mode="recommend", targetRef={"name": "web.v1"})
    query = actual_query(shadow, namespace="prod", name="web-shadow")
    assert 'pod=~"web\\\\.v1-(?:' in query and "web-shadow" not in query and 'model="chat"' in query


def test_the_comparison_integrates_both_sides_over_the_period() -> None:
    spec = make_spec(capacity={"gpusPerReplica": 2, "pricePerGpuHour": {"onDemand": 3.0}})
    # 100 s recorded at 10 s steps: 2 pods for 50 s, then 4 (one step missing: none ran then).
    actual = [(1000.0 + 10 * i, 2.0 if i < 5 else 4.0) for i in range(10) if i != 7]
    replay = SimpleNamespace(seconds=100, t=np.arange(0, 160, 10.0), total=np.array([3.0] * 10 + [9.0] * 6),
                             gpu_hours=0.2, cost=0.5, attainment=0.99)
    c = compare(actual, 10.0, spec, replay, requests=10_000)
    assert c.seconds == 100.0
    assert c.ran.mean_replicas == pytest.approx((5 * 2 + 4 * 4) / 10) and c.ran.peak_replicas == 4
    assert c.ran.gpu_hours == pytest.approx(260 / 3600 * 2) and c.ran.cost == pytest.approx(260 / 3600 * 2 * 3.0)
    assert c.ran.attainment is None and c.ran.cost_per_1m == pytest.approx(c.ran.cost / 10_000 * 1e6)
    # The replay's drain tail (t >= seconds) is not part of the period's replicas.
    assert (c.gpufleet.mean_replicas, c.gpufleet.peak_replicas) == (3.0, 3.0)
    assert (c.gpufleet.cost, c.gpufleet.attainment) == (0.5, 0.99)
    assert c.saving == pytest.approx(1 - 0.5 / c.ran.cost)
    assert c.as_dict()["saving"] == c.saving


def test_no_record_of_what_ran_is_an_error_not_zero() -> None:
    with pytest.raises(ValueError):
        compare([], 10.0, make_spec(), SimpleNamespace(seconds=0, t=np.array([]), total=np.array([]), gpu_hours=0.0,
                                                        cost=0.0, attainment=1.0), requests=0)


def test_the_table_names_both_sides_and_the_difference() -> None:
    import io

    from rich.console import Console

    replay = SimpleNamespace(seconds=20, t=np.array([0.0, 10.0]), total=np.array([1.0, 1.0]), gpu_hours=0.01,
                             cost=0.02, attainment=1.0)
    c = compare([(0.0, 2.0), (10.0, 2.0)], 10.0, make_spec(), replay, requests=100)
    console = Console(width=200, record=True, color_system=None, file=io.StringIO())
    console.print(table(c, "t"))
    text = console.export_text()
    assert "what ran (pods reporting)" in text and "gpufleet (replay of the spec)" in text
    assert "not measured" in text and "% saved" in text and "-1.00" in text
