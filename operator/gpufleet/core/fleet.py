"""Counting the fleet the way the decision needs it.

A replica on a node with an interruption notice still serves for a little while, but the plan
must not count on it: it is replaced at once. Draining replicas are already on their way out.
So "healthy" below means: not interrupted and not draining.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpufleet.core.types import ON_DEMAND, SPOT, FleetState, Replica, ReplicaState

READY_STATES = (ReplicaState.serving, ReplicaState.standby)


def is_healthy(replica: Replica) -> bool:
    return not replica.interrupted and replica.state != ReplicaState.draining


@dataclass(frozen=True)
class FleetView:
    """The counts one decision uses, computed once from a FleetState."""

    serving_all: int  # every replica in the Service now, interrupted ones included (they carry load)
    serving: int  # healthy serving
    standby: int  # healthy Ready standbys
    starting: int  # healthy, not Ready yet
    interrupted: int  # any state but draining, on a node with an interruption notice
    healthy_by_class: dict[str, int]  # healthy replicas (any state) per capacity class
    ready_by_class: dict[str, int]  # healthy Ready replicas (serving + standby) per class

    @property
    def healthy_total(self) -> int:
        return self.serving + self.standby + self.starting

    @staticmethod
    def of(fleet: FleetState) -> FleetView:
        rs = fleet.replicas
        healthy = [r for r in rs if is_healthy(r)]
        return FleetView(
            serving_all=sum(1 for r in rs if r.state == ReplicaState.serving),
            serving=sum(1 for r in healthy if r.state == ReplicaState.serving),
            standby=sum(1 for r in healthy if r.state == ReplicaState.standby),
            starting=sum(1 for r in healthy if r.state == ReplicaState.starting),
            interrupted=sum(1 for r in rs if r.interrupted and r.state != ReplicaState.draining),
            healthy_by_class={c: sum(1 for r in healthy if r.capacity_class == c) for c in (ON_DEMAND, SPOT)},
            ready_by_class={
                c: sum(1 for r in healthy if r.capacity_class == c and r.state in READY_STATES)
                for c in (ON_DEMAND, SPOT)
            },
        )
