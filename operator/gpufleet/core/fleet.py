"""Counting the fleet the way the decision needs it.

A replica on a node with an interruption notice still serves for a little while, but the plan
must not count on it: it is replaced at once. Draining replicas are already on their way out.
So "healthy" below means: not interrupted and not draining.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpufleet.core.types import ON_DEMAND, SPOT, FleetState, Replica, ReplicaState

READY_STATES = (ReplicaState.serving, ReplicaState.standby)
# The members as module constants: looking one up on the Enum class costs ~10x a global read, and
# these run per replica, ~10^5 times per simulated day.
_SERVING, _STANDBY, _STARTING, _DRAINING = (ReplicaState.serving, ReplicaState.standby, ReplicaState.starting,
                                            ReplicaState.draining)


def is_healthy(replica: Replica) -> bool:
    return not replica.interrupted and replica.state != _DRAINING


@dataclass(frozen=True, slots=True)
class FleetView:
    """The counts one decision uses, computed once from a FleetState."""

    serving_all: int  # every replica in the Service now, interrupted ones included (they carry load)
    serving: int  # healthy serving
    standby: int  # healthy Ready standbys
    starting: int  # healthy, not Ready yet
    interrupted: int  # any state but draining, on a node with an interruption notice
    healthy_by_class: dict[str, int]  # healthy replicas (any state) per capacity class
    ready_by_class: dict[str, int]  # healthy Ready replicas (serving + standby) per class
    # Any pod with an interruption notice, draining ones too: the policy scans the pods for a
    # noticed spot one only when there is one (most decisions there is none).
    noticed: bool = False

    @property
    def healthy_total(self) -> int:
        return self.serving + self.standby + self.starting

    @staticmethod
    def of(fleet: FleetState) -> FleetView:
        # The view of an (immutable) FleetState never changes: one decision asks for it several
        # times (policy, budget), and the simulator hands back the same FleetState while its
        # fleet is unchanged, so the last one is kept. Callers only read it.
        global _last_view
        last = _last_view  # read once: operator threads may replace it meanwhile
        if last is not None and last[0] is fleet:
            return last[1]
        view = FleetView._count(fleet)
        _last_view = (fleet, view)
        return view

    @staticmethod
    def _count(fleet: FleetState) -> FleetView:
        # One pass: the simulator calls this ~10^5 times per 14-day run.
        serving_all = serving = standby = starting = interrupted = 0
        noticed = False
        healthy = {ON_DEMAND: 0, SPOT: 0}
        ready = {ON_DEMAND: 0, SPOT: 0}
        for r in fleet.replicas:
            st = r.state
            if st == _SERVING:
                serving_all += 1
            if st == _DRAINING:
                noticed = noticed or r.interrupted
                continue
            if r.interrupted:
                interrupted += 1
                continue
            c = r.capacity_class
            if c in healthy:
                healthy[c] += 1
            if st == _SERVING:
                serving += 1
                if c in ready:
                    ready[c] += 1
            elif st == _STANDBY:
                standby += 1
                if c in ready:
                    ready[c] += 1
            elif st == _STARTING:
                starting += 1
        return FleetView(serving_all, serving, standby, starting, interrupted, healthy, ready, noticed or interrupted > 0)


_last_view: tuple[FleetState, FleetView] | None = None
