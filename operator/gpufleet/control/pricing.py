"""The cluster-wide price table: GPU-hour prices by GPU product and capacity type.

The operator's `--price-table FILE` is YAML keyed by the GPU product (the value of the node label
`nvidia.com/gpu.product`, as NVIDIA's GPU feature discovery sets it) and then by capacity type
(`on-demand`, `spot`, the values of `karpenter.sh/capacity-type`); `"*"` is the fallback product:

    NVIDIA-H100-80GB-HBM3: {on-demand: 6.98, spot: 2.45}
    Tesla-V100-SXM2-16GB:  {on-demand: 3.06, spot: 0.92}
    "*":                   {on-demand: 4.10, spot: 1.30}

A table entry overrides the service's own capacity.pricePerGpuHour for that class; a class whose
product is not in the table (and no "*") keeps the spec's price. The operator substitutes the
resolved prices into the spec before deciding, so the spot/on-demand split, the budget and the
metering all use the same prices.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from gpufleet.api.classes import replica_price
from gpufleet.api.models import CapacityClassSpec, ClassPlacement, InferenceServiceSpec, Prices
from gpufleet.core.types import ON_DEMAND, SPOT

PRODUCT_LABEL = "nvidia.com/gpu.product"
ANY = "*"

PriceTable = dict[str, dict[str, float]]


def parse_table(data: Any) -> PriceTable:
    """Validate the YAML document: {product: {on-demand|spot: non-negative number}}."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ValueError("price table: expected a mapping of GPU product -> {on-demand, spot}")
    table: PriceTable = {}
    for product, prices in data.items():
        if not isinstance(prices, Mapping):
            raise ValueError(f"price table: {product!r}: expected {{on-demand: N, spot: N}}")
        row: dict[str, float] = {}
        for cls, value in prices.items():
            if cls not in (ON_DEMAND, SPOT):
                raise ValueError(f"price table: {product!r}: unknown capacity type {cls!r} (on-demand, spot)")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"price table: {product!r}.{cls}: expected a non-negative number, got {value!r}")
            row[str(cls)] = float(value)
        table[str(product)] = row
    return table


def load_table(path: str) -> PriceTable:
    with open(path) as fh:
        return parse_table(yaml.safe_load(fh))


def product_of(spec: InferenceServiceSpec, placement: ClassPlacement) -> str | None:
    """The GPU product a class's pods must land on: its nodeSelector, else the pod template's."""
    product = placement.node_selector.get(PRODUCT_LABEL)
    if product:
        return product
    selector = (spec.template.get("spec") or {}).get("nodeSelector") or {}
    value = selector.get(PRODUCT_LABEL) if isinstance(selector, Mapping) else None
    return str(value) if value else None


def resolve(
    spec: InferenceServiceSpec, table: PriceTable, discovered: Mapping[str, str] | None = None
) -> tuple[Prices, str]:
    """Prices for the service and a note of where they came from.

    `discovered`: product per class found on the nodes (used when no selector pins the product).
    """
    own = spec.capacity.price_per_gpu_hour
    if not table:
        return own, "spec"
    found = discovered or {}
    out = {ON_DEMAND: own.on_demand, SPOT: own.spot}
    notes = []
    for cls, placement in ((ON_DEMAND, spec.capacity.on_demand), (SPOT, spec.capacity.spot)):
        product = product_of(spec, placement) or found.get(cls)
        for key in (product, ANY):
            if key is not None and cls in table.get(key, {}):
                out[cls] = table[key][cls]
                notes.append(f"{cls}: table[{key}]")
                break
        else:
            notes.append(f"{cls}: spec")
    return Prices(on_demand=out[ON_DEMAND], spot=out[SPOT]), ", ".join(notes)


def with_prices(spec: InferenceServiceSpec, prices: Prices, table: PriceTable | None = None) -> InferenceServiceSpec:
    """The spec with the resolved prices in it; with spec.capacity.classes and a table, each class
    without pricePerReplicaHour gets the table's price for its product (api.classes.replica_price)."""
    classes = spec.capacity.classes
    if table and classes is not None:
        classes = [c if c.price_per_replica_hour is not None or not _in_table(c, table) else
                   c.model_copy(update={"price_per_replica_hour": replica_price(c, table)}) for c in classes]
    if prices == spec.capacity.price_per_gpu_hour and classes == spec.capacity.classes:
        return spec
    capacity = spec.capacity.model_copy(update={"price_per_gpu_hour": prices, "classes": classes})
    return spec.model_copy(update={"capacity": capacity})


def _in_table(cls: CapacityClassSpec, table: PriceTable) -> bool:
    kind = SPOT if cls.spot else ON_DEMAND
    return any(kind in table.get(key, {}) for key in (cls.product or "", ANY))
