"""api.classes: the capacity-class list's validation, and the onDemand/spot form as two classes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from gpufleet.api.classes import CapacityClasses, CapacityClassSpec, classes_of, replica_price, to_core_fields
from gpufleet.api.models import InferenceServiceSpec
from gpufleet.core.classes import GpuClass, choose
from gpufleet.core.split import class_split

TEMPLATE = {"spec": {"containers": [{"name": "triton", "image": "nvcr.io/nvidia/tritonserver:24.05-py3"}]}}


def spec(**capacity: object) -> InferenceServiceSpec:
    return InferenceServiceSpec.model_validate({"model": {"name": "m"}, "template": TEMPLATE, "capacity": capacity,
                                                "replicas": {"min": 0, "max": 40},
                                                "scaling": {"targetRpsPerReplica": 2.0}})


def test_a_list_of_gpu_types_and_mig_slices_parses() -> None:
    parsed = CapacityClasses.model_validate({"classes": [
        {"name": "h100", "resources": {"nvidia.com/gpu": 1}, "product": "NVIDIA-H100-80GB-HBM3",
         "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}},
        {"name": "h100-mig", "resources": {"nvidia.com/mig-3g.40gb": 1}, "product": "NVIDIA-H100-80GB-HBM3",
         "sliceOfGpu": 0.5, "targetRpsPerReplica": 1.2, "maxShare": 0.5},
        {"name": "l4-spot", "resources": {"nvidia.com/gpu": 1}, "spot": True, "pricePerReplicaHour": 0.3,
         "pendingTimeoutSeconds": 60},
    ]})
    mig = parsed.classes[1]
    assert mig.gpus() == 0.5
    table = {"NVIDIA-H100-80GB-HBM3": {"on-demand": 3.0}}
    assert replica_price(mig, table) == 1.5
    assert replica_price(parsed.classes[2]) == 0.3
    fields = to_core_fields(mig, 0.8, None, table)
    assert GpuClass(**fields).rps_per_replica == pytest.approx(0.96)


@pytest.mark.parametrize("classes, words", [
    ([{"name": "a", "pricePerReplicaHour": 1}, {"name": "a", "pricePerReplicaHour": 2}], "unique"),
    ([{"name": "a", "spot": True, "pricePerReplicaHour": 1}], "not spot"),
    ([{"name": "a"}], "pricePerReplicaHour or product"),
    ([{"name": "a", "pricePerReplicaHour": 1, "min": 3, "max": 2}], "min 3 > max 2"),
    ([{"name": "A_b", "pricePerReplicaHour": 1}], "pattern"),
])
def test_bad_lists_are_refused_naming_the_problem(classes: list[dict[str, object]], words: str) -> None:
    with pytest.raises(ValidationError) as err:
        CapacityClasses.model_validate({"classes": classes})
    assert words in str(err.value)


def test_table_without_a_price_names_the_class() -> None:
    cls = CapacityClassSpec(name="l4", product="NVIDIA-L4")
    with pytest.raises(ValueError, match="class 'l4'.*NVIDIA-L4"):
        replica_price(cls, {"NVIDIA-H100": {"on-demand": 3.0}})
    assert replica_price(cls, {"*": {"on-demand": 0.7}}) == 0.7


def test_the_two_class_form_maps_to_two_classes() -> None:
    s = spec(gpusPerReplica=2, onDemand={"base": 2, "nodeSelector": {"pool": "od"}},
             spot={"enabled": True, "maxFraction": 0.6, "pendingTimeoutSeconds": 90,
                   "tolerations": [{"key": "spot", "operator": "Exists"}]},
             pricePerGpuHour={"onDemand": 4.0, "spot": 1.5})
    od, sp = classes_of(s)
    assert (od.name, od.spot, od.min, od.max, od.price_per_replica_hour) == ("on-demand", False, 2, 40, 8.0)
    assert od.node_selector == {"pool": "od"} and od.resources == {"nvidia.com/gpu": 2}
    assert (sp.name, sp.spot, sp.max_share, sp.price_per_replica_hour) == ("spot", True, 0.6, 3.0)
    assert sp.pending_timeout_seconds == 90 and sp.tolerations == [{"key": "spot", "operator": "Exists"}]
    assert od.target_rps_per_replica == sp.target_rps_per_replica == 2.0
    assert [c.name for c in classes_of(spec())] == ["on-demand"]  # spot off: one class


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 5), st.floats(0.0, 1.0), st.floats(0.5, 8.0), st.floats(0.05, 0.95), st.integers(0, 40))
def test_same_gpu_classes_give_the_replica_split(base: int, frac: float, od_price: float, discount: float,
                                                 total: int) -> None:
    s = spec(onDemand={"base": base}, spot={"enabled": True, "maxFraction": frac},
             pricePerGpuHour={"onDemand": od_price, "spot": od_price * discount})
    if total < base:
        return  # base is capped at the fleet, a class min is not (module docstring)
    old = class_split(s, total, False, 0)
    core = [GpuClass(**to_core_fields(c, 1.0, None)) for c in classes_of(s)]
    mix = choose(core, total * 2.0)  # 2 rps per replica
    assert (mix.replicas["on-demand"], mix.replicas["spot"]) == (old.on_demand, old.spot)
