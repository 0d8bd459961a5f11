"""Drive a SimFleet second by second as the simulation engine does (events due, then a decision
every `interval` seconds), recording what a test reads each second."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from gpufleet.core.types import Plan
from gpufleet.sim.fleet import SimFleet

T = TypeVar("T")


def drive(f: SimFleet, start: int, end: int, p: Plan, *, interval: int = 10,
          read: Callable[[SimFleet], T] | None = None) -> dict[int, T]:
    seen: dict[int, T] = {}
    for t in range(start, end):
        if t >= f.next_due:
            f.advance(float(t))
        if t % interval == 0:
            f.apply(p, now=float(t))
        if read is not None:
            seen[t] = read(f)
    return seen
