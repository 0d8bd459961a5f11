"""The fleet emulator follows pods with one LIST and then a WATCH (no polling), keeps each pod's
counters across updates, and lists again after a 410 Gone."""

from __future__ import annotations

import logging

import json
import threading
from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from gpufleet.adapters.manifests import LABEL_SERVICE, LABEL_SERVING
from gpufleet.emulator import Emulator, LoadProfile, watch_pods


def pod(name: str, *, ready: bool = True, serving: bool = True, rv: str = "1",
        deleting: bool = False, grace: int | None = None) -> dict[str, Any]:
    labels = {LABEL_SERVICE: "svc", **({LABEL_SERVING: "true"} if serving else {})}
    meta: dict[str, Any] = {"namespace": "ns", "name": name, "resourceVersion": rv, "labels": labels,
                            "creationTimestamp": "2026-01-01T00:00:00Z"}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:01:00Z"
        if grace is not None:
            meta["deletionGracePeriodSeconds"] = grace
    cond = {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": "2026-01-01T00:00:05Z"}
    return {"metadata": meta, "status": {"conditions": [cond]}}


def emulator() -> Emulator:
    return Emulator(loads={}, slots=8, service_time_s=1.0)


def test_events_update_serving_and_keep_counters() -> None:
    emu = emulator()
    assert emu.sync_pods([pod("a"), pod("b", ready=False)])
    emu.pods["ns/a"].success = 5
    assert emu.serving == {"ns/svc": ["ns/a"]}
    assert not emu.update_pod(pod("b"), deleted=False)  # b turns Ready and serving: same targets
    assert sorted(emu.serving["ns/svc"]) == ["ns/a", "ns/b"]
    assert not emu.update_pod(pod("a", serving=False), deleted=False)  # a leaves the Service (draining)
    assert emu.serving == {"ns/svc": ["ns/b"]} and emu.pods["ns/a"].success == 5
    assert emu.update_pod(pod("a", deleting=True), deleted=False)  # terminating: Triton is gone
    assert emu.update_pod(pod("b"), deleted=True)
    assert emu.pods == {} and emu.serving == {}
    assert not emu.sync_pods([])


class FakeResponse:
    """What the kubernetes client returns with _preload_content=False."""

    status = 200

    def __init__(self, body: bytes = b"", events: list[dict[str, Any]] | None = None) -> None:
        self.data = body
        self.events = events or []

    def stream(self, amt: int | None = None, decode_content: bool = False) -> Iterator[bytes]:
        for event in self.events:
            yield json.dumps(event).encode() + b"\n"

    def close(self) -> None:
        pass

    def release_conn(self) -> None:
        pass


class FakeCore:
    """list_pod_for_all_namespaces: LIST answers from `lists`, WATCH from `watches`; when the
    watches run out, it stops the emulator's watcher."""

    def __init__(self, lists: list[list[dict[str, Any]]], watches: list[list[dict[str, Any]]],
                 stop: threading.Event) -> None:
        self.lists, self.watches, self.stop = deque(lists), deque(watches), stop
        self.calls: list[dict[str, Any]] = []

    def list_pod_for_all_namespaces(self, **kwargs: Any) -> FakeResponse:
        self.calls.append(kwargs)
        if kwargs.get("watch"):
            if not self.watches:
                self.stop.set()
            return FakeResponse(events=self.watches.popleft() if self.watches else [])
        version = str(10 * len([c for c in self.calls if not c.get("watch")]))
        items = self.lists.popleft()
        return FakeResponse(json.dumps({"metadata": {"resourceVersion": version}, "items": items}).encode())


def test_watch_resumes_from_its_version_and_relists_after_gone() -> None:
    stop, changed = threading.Event(), threading.Event()
    gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}}
    core = FakeCore(
        lists=[[pod("a")], [pod("a"), pod("b", rv="15")]],
        watches=[[{"type": "ADDED", "object": pod("b", ready=False, rv="11")}, gone],
                 [{"type": "DELETED", "object": pod("a", rv="21")},
                  {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "25"}}}]],
        stop=stop)
    emu = emulator()
    watch_pods(emu, core, changed, stop, timeout_s=5)  # type: ignore[arg-type]
    kinds = [("watch" if c.get("watch") else "list", c.get("resource_version")) for c in core.calls]
    assert kinds == [("list", None), ("watch", "10"), ("list", None), ("watch", "20"), ("watch", "25")]
    # Every pod is listed (plain Deployments' pods labelled EMULATE_LABEL too); _apply keeps its own.
    assert all("label_selector" not in c for c in core.calls)
    assert changed.is_set()
    assert list(emu.pods) == ["ns/b"] and emu.serving == {"ns/svc": ["ns/b"]}


def test_dropped_requests_are_counted(caplog: pytest.LogCaptureFixture) -> None:
    """Load offered while no pod serves, and requests still queued or in flight on a pod that goes
    (deleted, or missing from a relist), are dropped: tests/chaos counts them per service, and the
    log says which pod took how many (what a failing chaos trial quotes)."""
    caplog.set_level(logging.WARNING, logger="gpufleet.emulator")
    emu = Emulator(loads={"ns/svc": LoadProfile(np.array([0.0]), np.array([10.0]))}, slots=2, service_time_s=100.0)
    emu.advance(0.0, 1.0)  # no pod yet: 10 requests refused
    assert emu.stats()["ns/svc"]["dropped"] == 10
    emu.sync_pods([pod("a"), pod("b")])
    emu.advance(0.0, 1.0)  # 5 each: 2 in flight, 3 pending
    assert emu.stats()["ns/svc"]["dropped"] == 10 and emu.stats()["ns/svc"]["serving"] == 2
    emu.update_pod(pod("a", deleting=True, grace=0), deleted=False)  # force-deleted: no grace to finish in
    assert emu.stats()["ns/svc"]["dropped"] == 15
    emu.sync_pods([])  # b deleted while the watch was down
    assert emu.stats()["ns/svc"]["dropped"] == 20
    assert [r.getMessage() for r in caplog.records] == [
        "dropping the load of ns/svc: no serving pod",
        "dropped 5.0 requests of ns/svc: pod ns/a terminating with 3.0 pending, 2.0 in flight",
        "dropped 5.0 requests of ns/svc: pod ns/b gone from a new listing with 3.0 pending, 2.0 in flight"]


def test_a_terminating_pod_finishes_its_requests_within_its_grace() -> None:
    """SIGTERM, as Triton takes it: no new requests, the queued and running ones finish within the
    grace period (capped by --exit-timeout-secs), also after KWOK has deleted the Pod object; only
    what is left when the grace ends is dropped."""
    load = {"ns/svc": LoadProfile(np.array([0.0]), np.array([10.0]))}
    emu = Emulator(loads=load, slots=4, service_time_s=2.0, exit_timeout_s=30.0)
    emu.sync_pods([pod("a"), pod("b")])
    emu.advance(0.0, 1.0)  # 5 each: 4 in flight, 1 pending
    assert emu.update_pod(pod("a", deleting=True, grace=30), deleted=False)  # out of the scrape targets
    emu.update_pod(pod("a", deleting=True, grace=30), deleted=True)  # KWOK deletes the object at once
    assert "ns/a" not in emu.pods and emu.serving == {"ns/svc": ["ns/b"]}
    done_before = emu.stats()["ns/svc"]["success"]
    for t in range(1, 20):
        emu.advance(float(t), 1.0)
    assert emu.exiting == {}
    assert emu.stats()["ns/svc"]["dropped"] == 0
    assert emu.stats()["ns/svc"]["success"] > done_before + 5  # a's five finished beside b's work

    # A request that outlives the grace (a pinned generation) is dropped when it ends.
    emu = Emulator(loads={}, slots=4, service_time_s=2.0, exit_timeout_s=5.0)
    emu.sync_pods([pod("c")])
    assert emu.hold("ns/c", 2)
    emu.update_pod(pod("c", deleting=True, grace=30), deleted=False)  # the exit timeout (5 s) is shorter
    for t in range(4):
        emu.advance(float(t), 1.0)
    assert "ns/c" in emu.exiting and emu.stats()["ns/svc"]["dropped"] == 0
    emu.advance(5.0, 1.0)
    assert emu.exiting == {} and emu.stats()["ns/svc"]["dropped"] == 2
