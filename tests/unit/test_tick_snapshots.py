"""A tick reads the watch indexes once (adapters.pods.TickSnapshots): its later reads reuse that
snapshot while it is young, and reads outside a tick are always fresh."""

from __future__ import annotations

from gpufleet.adapters.pods import Snapshot, TickSnapshots


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def reader() -> tuple[list[bool], TickSnapshots, Clock]:
    reads: list[bool] = []
    clock = Clock()

    def read(node_labels: bool) -> Snapshot:
        reads.append(node_labels)
        return Snapshot(node_labels=({"n": str(len(reads))},) if node_labels else ())

    return reads, TickSnapshots(read, reuse_s=0.5, clock=clock), clock


def test_a_tick_reuses_the_snapshot_it_starts_with_while_young() -> None:
    reads, snaps, clock = reader()
    first = Snapshot(pods=({"metadata": {"name": "a"}},))
    snaps.hold(first)
    clock.now += 0.3
    assert snaps.get() is first and snaps.get() is first and reads == []
    # Node labels were not part of it: read.
    assert snaps.get(node_labels=True).node_labels == ({"n": "1"},) and reads == [True]
    # Older than reuse_s (a slow Prometheus read in between): read afresh.
    clock.now += 0.3
    assert snaps.get() is not first and reads == [True, False]


def test_reads_outside_a_tick_are_fresh() -> None:
    reads, snaps, clock = reader()
    snaps.hold(Snapshot())
    snaps.clear()  # the tick ended: a reroute (a pod turned Ready) must see the pod
    snaps.get()
    snaps.get()
    assert reads == [False, False]
