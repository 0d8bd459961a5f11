"""The decision core's, the control step's, the forecaster's and the simulator's dataclasses keep
slots (the why: core/types.py). A dataclass without them still works, only slower on Python 3.12
and 3.13, so nothing else would notice one added without them."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil

import pytest

import gpufleet.core
import gpufleet.forecasting
import gpufleet.sim

PACKAGES = (gpufleet.core, gpufleet.sim, gpufleet.forecasting)
MODULES = ("gpufleet.control.step",)


def _dataclasses() -> list[type]:
    names = [m.name for p in PACKAGES for m in pkgutil.iter_modules(p.__path__, p.__name__ + ".")]
    out = []
    for name in [*names, *MODULES]:
        module = importlib.import_module(name)
        out += [c for c in vars(module).values()
                if isinstance(c, type) and dataclasses.is_dataclass(c) and c.__module__ == name]
    return out


def test_every_dataclass_there_has_slots() -> None:
    found = _dataclasses()
    assert len(found) > 50  # the walk found them (core.types, sim.fleet, forecasting ...)
    unslotted = [f"{c.__module__}.{c.__qualname__}" for c in found if "__slots__" not in vars(c)]
    assert not unslotted, f"dataclass(slots=True) missing on {unslotted}"


def test_a_slotted_pod_takes_no_new_attribute() -> None:
    # What slots change for callers: no per-instance __dict__, so a misspelt field fails loudly.
    from gpufleet.core.types import Replica, ReplicaState

    r = Replica("p", "on-demand", ReplicaState.serving, 0.0)
    assert not hasattr(r, "__dict__")
    with pytest.raises(AttributeError):
        object.__setattr__(r, "in_fligth", 1.0)
