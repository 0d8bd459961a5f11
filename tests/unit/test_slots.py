"""The decision core's, the control step's, the forecaster's and the simulator's dataclasses keep
slots (the why: core/types.py). A dataclass without them still works, only slower on Python 3.12
and 3.13, so nothing else would notice one added without them. And the __init__ core.types.quick_init
gives a class builds what the __init__ dataclasses generates would."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

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


QUICK = ("gpufleet.core.types.Replica", "gpufleet.core.types.FleetState", "gpufleet.core.types.Observation",
         "gpufleet.core.types.Plan", "gpufleet.core.rollout.Release", "gpufleet.core.rollout.Rollout",
         "gpufleet.control.step.StepResult")


def _class(path: str) -> type:
    module, name = path.rsplit(".", 1)
    cls: type = getattr(importlib.import_module(module), name)
    return cls


def _twin(cls: type) -> type:
    """The same fields, defaults and factories, with the __init__ dataclasses generates."""
    spec = [(f.name, Any, dataclasses.field(default=f.default, default_factory=f.default_factory))
            for f in dataclasses.fields(cls)]
    return dataclasses.make_dataclass(cls.__name__, spec, frozen=True, slots=True)


@pytest.mark.parametrize("path", QUICK)
@given(data=st.data())
def test_quick_init_builds_what_the_generated_init_builds(path: str, data: st.DataObject) -> None:
    cls = _class(path)
    twin = _twin(cls)
    fields = dataclasses.fields(cls)
    required = [f for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    values = st.one_of(st.none(), st.integers(), st.text(max_size=3), st.tuples(st.integers()))
    positional = data.draw(st.lists(values, min_size=len(required), max_size=len(fields)))
    named = {f.name: data.draw(values) for f in fields[len(positional):] if data.draw(st.booleans())}
    got, want = cls(*positional, **named), twin(*positional, **named)
    assert [getattr(got, f.name) for f in fields] == [getattr(want, f.name) for f in fields]
    for f in fields:  # a default factory's value is each instance's own
        if f.default_factory is not dataclasses.MISSING and f.name not in named and len(positional) <= fields.index(f):
            assert getattr(got, f.name) is not getattr(cls(*positional, **named), f.name)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(got, fields[0].name, 1)
    with pytest.raises(TypeError):
        cls(*positional, **{fields[0].name: 1}) if positional else cls(no_such_field=1)
