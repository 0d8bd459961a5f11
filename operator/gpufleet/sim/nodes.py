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

Billing: every node that exists is billed, busy or free, from its launch to its deletion (a
cloud bills the instance while it runs, empty or not). `billed(cls)` is kept as a count, O(1).
Bookkeeping: free nodes by (class, zone) in insertion order (a start takes the most recently
freed, O(1)); consolidation times in a heap with lazy deletion (O(log n) per release).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

from gpufleet.core.types import CAPACITY_CLASSES


@dataclass(eq=False)
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
    def __init__(self, gpus_per_node: int = 1) -> None:
        self.gpus_per_node = gpus_per_node
        self.nodes: dict[str, Node] = {}
        self._free: dict[tuple[str, int], dict[str, Node]] = {}
        self._expiry: list[tuple[float, str, int]] = []  # (consolidate at, node, epoch)
        self._count = dict.fromkeys(CAPACITY_CLASSES, 0)
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

    def free(self, cls: str) -> int:
        return sum(len(v) for (c, _), v in self._free.items() if c == cls)
