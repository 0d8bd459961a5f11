"""The GPU nodes under a simulated fleet (issue 16 item 2): what SimFleet bills.

Each replica runs on a node of its own (gpus_per_replica GPUs), as a pod requesting all of a GPU
node's `nvidia.com/gpu` does. Nodes belong to a capacity class (on-demand and spot are separate
node pools: a spot pod never lands on an on-demand node or the reverse) and, for spot, to a zone.

- A pod that starts takes a free node of its class and zone if there is one (provisioned, image
  and weights cached: only the pod's own stages remain, sim/coldstart.py); otherwise a node is
  provisioned for it (Karpenter launches a NodeClaim for the pending pod).
- A pod removed by a scale-in or a drain frees its node. The node stays, empty and billed, for the
  cold-start model's consolidate_after_s (Karpenter's consolidateAfter: an empty node is removed
  after it has been empty that long), counted from when it is up; a start of its class within that
  time takes it. Then it is consolidated (deleted).
- A node whose pod is lost with it (a spot reclaim) goes with the pod; so does the node of a
  noticed pod that leaves before the reclaim (Karpenter's interruption handling cordons, drains and
  deletes a node that received an interruption notice), and free spot nodes of a zone are deleted
  at that zone's notice.

Classes: by default the two of the onDemand/spot form (one GPU per node, the fleet's gpus_per_replica);
with spec.capacity.classes, one node pool per named class (`NodeClass`: GPUs per node, a MIG slice
as its share of a GPU; price per node-hour; spot or not; its stock-out windows).

Billing: every node that exists is billed, busy or free, from its launch to its deletion (a
cloud bills the instance while it runs, empty or not). `billed(cls)` is kept as a count, O(1).
Bookkeeping: free nodes by (class, zone) in insertion order (a start takes the most recently
freed, O(1)); consolidation times in a heap with lazy deletion (O(log n) per release).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass

from gpufleet.core.types import ON_DEMAND, SPOT


@dataclass(frozen=True, slots=True)
class StockOut:
    """No node of the class can be had over [start_s, end_s): its new pods stay Pending. With
    `reclaim`, its running nodes get an interruption notice at start_s and go notice_s later."""

    start_s: float
    end_s: float
    reclaim: bool = False
    notice_s: float = 120.0

    def covers(self, t: float) -> bool:
        return self.start_s <= t < self.end_s


@dataclass(frozen=True, slots=True)
class NodeClass:
    """One capacity class's node pool: what a node of it holds and costs, and when it cannot be had.

    `spot`: its pods are placed by the fleet's SpotTrace (zones, reclaims), if the fleet has one.
    `rps_per_replica`: the load-test capacity of one replica on it (the simulator's service model
    reads it; the policy reads the spec's figure)."""

    name: str
    spot: bool = False
    gpus: float = 1.0  # GPUs one replica's node bills (a MIG 3g.40gb slice of an H100: 0.5)
    price_per_hour: float = 0.0  # one node (replica) for one hour
    rps_per_replica: float = 0.0
    pending_timeout_s: float | None = None  # None: the fleet's
    stock_outs: tuple[StockOut, ...] = ()

    def stock_out(self, t: float) -> StockOut | None:
        return next((o for o in self.stock_outs if o.covers(t)), None)


def two_classes(gpus_per_node: float = 1.0) -> tuple[NodeClass, ...]:
    """The onDemand/spot form's classes."""
    return NodeClass(ON_DEMAND, gpus=gpus_per_node), NodeClass(SPOT, spot=True, gpus=gpus_per_node)


@dataclass(eq=False, slots=True)
class Node:
    name: str
    cls: str
    zone: int  # spot: the zone; -1: none (on-demand, or spot without zones)
    created_at: float
    warm_at: float  # from then on it is up with the image (and weights) cached
    pod: str | None = None
    free_since: float | None = None
    epoch: int = 0  # counts its releases (a consolidation entry is valid for one)


class NodePool:
    def __init__(self, gpus_per_node: float = 1, classes: Sequence[NodeClass] | None = None) -> None:
        self.gpus_per_node = gpus_per_node
        self.classes = {c.name: c for c in (classes if classes is not None else two_classes(gpus_per_node))}
        if classes is not None and len(self.classes) != len(classes):
            raise ValueError(f"node classes must have unique names: {[c.name for c in classes]}")
        self.nodes: dict[str, Node] = {}
        self._free: dict[tuple[str, int], dict[str, Node]] = {}
        self._expiry: list[tuple[float, str, int]] = []  # (consolidate at, node, epoch)
        self._count = dict.fromkeys(self.classes, 0)
        self._seq = 0
        self.provisioned = 0  # nodes launched
        self.reused = 0  # starts that took a free node
        self.consolidated = 0  # free nodes removed after consolidate_after_s

    # -- a pod starts --------------------------------------------------------------------------

    def take(self, cls: str, zone: int, pod: str) -> Node | None:
        """A free node of the class and zone for `pod` (the most recently freed), or None."""
        free = self._free.get((cls, zone))
        if not free:
            return None
        _, node = free.popitem()
        node.pod, node.free_since = pod, None
        self.reused += 1
        return node

    def provision(self, cls: str, zone: int, pod: str, *, now: float, warm_at: float) -> Node:
        """A new node for `pod`, launched now, up with the image (and weights) at warm_at."""
        if cls not in self._count:
            raise KeyError(f"no node class {cls!r} (known: {', '.join(self._count)})")
        self._seq += 1
        node = Node(name=f"node-{cls}-{self._seq}", cls=cls, zone=zone, created_at=now, warm_at=warm_at, pod=pod)
        self.nodes[node.name] = node
        self._count[cls] += 1
        self.provisioned += 1
        return node

    # -- a pod leaves --------------------------------------------------------------------------

    def release(self, node: Node, *, now: float, keep_s: float) -> None:
        """Its pod is gone: the node waits keep_s from when it is up, then is consolidated; at once
        when keep_s is 0."""
        if keep_s <= 0:
            self.delete(node)
            return
        node.pod, node.free_since = None, now
        node.epoch += 1
        self._free.setdefault((node.cls, node.zone), {})[node.name] = node
        heapq.heappush(self._expiry, (max(now, node.warm_at) + keep_s, node.name, node.epoch))

    def delete(self, node: Node) -> None:
        if self.nodes.pop(node.name, None) is None:
            return
        self._count[node.cls] -= 1
        free = self._free.get((node.cls, node.zone))
        if free is not None:
            free.pop(node.name, None)

    def reclaim_zone(self, cls: str, zone: int) -> int:
        """The zone's capacity is being reclaimed: its free nodes of the class go now."""
        free = self._free.get((cls, zone))
        if not free:
            return 0
        gone = list(free.values())
        for node in gone:
            self.delete(node)
        return len(gone)

    def consolidate(self, now: float) -> int:
        """Remove the free nodes whose consolidation time has come; how many went."""
        n = 0
        heap = self._expiry
        while heap and heap[0][0] <= now:
            _, name, epoch = heapq.heappop(heap)
            node = self.nodes.get(name)
            if node is not None and node.pod is None and node.epoch == epoch:
                self.delete(node)
                self.consolidated += 1
                n += 1
        return n

    def next_event(self) -> float:
        """The next consolidation time (a stale entry may make it early: harmless)."""
        return self._expiry[0][0] if self._expiry else math.inf

    # -- billing -------------------------------------------------------------------------------

    def billed(self, cls: str) -> int:
        """Nodes of the class that exist now (busy or free): each is billed."""
        return self._count[cls]

    def billed_gpus(self, cls: str) -> float:
        """GPUs billed now for the class (its nodes x GPUs per node)."""
        return self._count[cls] * self.classes[cls].gpus

    def cost_per_hour(self) -> float:
        """What the nodes that exist now cost per hour, at their classes' prices."""
        return sum(n * self.classes[c].price_per_hour for c, n in self._count.items())

    def free(self, cls: str) -> int:
        return sum(len(v) for (c, _), v in self._free.items() if c == cls)
