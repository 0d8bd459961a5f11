"""Pure parts of the kopf layer: shard selectors, index snapshots, pods turning Ready."""

from __future__ import annotations

from typing import Any

import pytest

from gpufleet.adapters.pods import NodeInfo, node_info, trim_pod
from gpufleet.adapters.pods import turned_ready
from gpufleet.kopf_app import Config, parse_selector, take_snapshot


def test_selector_terms_and_matching() -> None:
    config = Config(selector=parse_selector("team=a, tier!=free,gpufleet.io/shard,!legacy"))
    assert config.selects({"team": "a", "tier": "paid", "gpufleet.io/shard": "x"})
    assert not config.selects({"team": "b", "tier": "paid", "gpufleet.io/shard": "x"})
    assert not config.selects({"team": "a", "tier": "free", "gpufleet.io/shard": "x"})
    assert not config.selects({"team": "a", "tier": "paid"})
    assert not config.selects({"team": "a", "gpufleet.io/shard": "x", "legacy": "1"})
    assert Config().selects({})  # no selector: every service
    assert Config(selector=parse_selector("!gpufleet.io/shard")).selects({"team": "a"})


@pytest.mark.parametrize("bad", ["a in (b,c)", "!", "=v"])
def test_selector_rejects_what_it_does_not_support(bad: str) -> None:
    with pytest.raises(ValueError, match="unsupported selector term"):
        parse_selector(bad)


class Store(list[Any]):
    """What a kopf index holds per key: a collection of values."""


def index(entries: dict[Any, list[Any]]) -> dict[Any, Store]:
    return {k: Store(v) for k, v in entries.items()}


def pod(name: str, node: str | None) -> dict[str, Any]:
    return trim_pod({"metadata": {"name": name, "namespace": "ns", "labels": {"a": "b"}, "managedFields": [{}]},
                     "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i", "ports": []}]},
                     "status": {"podIP": "10.0.0.1", "phase": "Running",
                                "conditions": [{"type": "Ready", "status": "True"}, {"type": "Initialized"}]}})


def test_snapshot_takes_this_services_slice_of_the_indexes() -> None:
    pods = index({("ns", "chat"): [pod("chat-ondemand-1-a", "n1"), pod("chat-ondemand-1-b", "gone")],
                  ("ns", "other"): [pod("other-ondemand-1-a", "n1")]})
    nodes = index({"n1": [NodeInfo(labels={"p": "L4"})], "n2": [NodeInfo(labels={"p": "H100"})]})
    deployments = index({("ns", "chat-ondemand"): [2], ("ns", "other-ondemand"): [5]})
    snap = take_snapshot("ns", "chat", pods=pods, nodes=nodes, deployments=deployments)  # type: ignore[arg-type]
    assert [p["metadata"]["name"] for p in snap.pods] == ["chat-ondemand-1-a", "chat-ondemand-1-b"]
    assert set(snap.nodes) == {"n1"}  # a pod's node missing from the index is a node that is gone
    assert dict(snap.deployments) == {"chat-ondemand": 2}
    assert snap.node_labels == ()
    every = take_snapshot("ns", "chat", pods=pods, nodes=nodes, deployments=deployments,  # type: ignore[arg-type]
                          node_labels=True)
    assert sorted(labels["p"] for labels in every.node_labels) == ["H100", "L4"]
    assert take_snapshot("ns", "none", pods=pods, nodes=nodes, deployments=deployments).pods == ()  # type: ignore[arg-type]


def test_trimmed_pods_keep_only_what_the_fleet_reads() -> None:
    trimmed = pod("p", "n1")
    assert "managedFields" not in trimmed["metadata"]
    assert trimmed["status"]["conditions"] == [{"type": "Ready", "status": "True"}]
    assert trimmed["spec"]["containers"] == [{"ports": []}]


def test_node_notice_from_taints_and_cordon() -> None:
    aws = node_info({"metadata": {"labels": {}}, "spec": {"taints": [
        {"key": "karpenter.sh/disrupted", "effect": "NoSchedule", "timeAdded": "2026-12-02T10:00:00Z"}]}})
    assert aws.notice is not None and aws.notice[1] == 120.0 and aws.notice[0] is not None
    cordoned = node_info({"metadata": {}, "spec": {"unschedulable": True}})
    assert cordoned.notice == (None, None)
    assert node_info({"metadata": {"labels": {"x": "y"}}, "spec": {}}) == NodeInfo(labels={"x": "y"})


def test_a_pod_turns_ready_once_per_transition() -> None:
    starting, ready = pod("p", "n1"), pod("p", "n1")
    starting["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    assert turned_ready([starting], ready)
    assert turned_ready([], ready)  # first seen Ready (a restart's listing: no loop to wake yet)
    assert not turned_ready([ready], ready)  # still Ready: a label patch, a new resourceVersion
    assert not turned_ready([ready], starting)  # lost Ready
    assert not turned_ready([starting, ready], pod("q", "n1") | {"status": {}})
    assert turned_ready([pod("other", "n1") | {"status": {}}, starting], ready)  # matched by name
