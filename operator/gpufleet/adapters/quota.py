"""GPUQuota I/O: the status patch of the cluster-scoped object (reads come from kopf's watch)."""

from __future__ import annotations

import json
from typing import Any

from gpufleet.adapters.kube import FIELD_MANAGER, Kube, with_retries
from gpufleet.api.models import GROUP, VERSION
from gpufleet.api.quota import PLURAL


def patch_quota_status(kube: Kube, name: str, status: dict[str, Any]) -> None:
    """Merge-patch GPUQuota `name`'s status subresource (finite numbers only: JSON has no NaN)."""
    json.dumps(status, allow_nan=False)
    with_retries(lambda timeout: kube.custom.patch_cluster_custom_object_status(
        GROUP, VERSION, PLURAL, name, {"status": status}, field_manager=FIELD_MANAGER, _request_timeout=timeout,
    ), timeout=kube.timeout, budget_s=kube.budget_s, what=f"patch status of GPUQuota {name}")
