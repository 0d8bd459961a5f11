"""The kopf layer of GPUQuota (cluster-scoped): keep each quota's spec on the shared board, run
its arbitration every spec.intervalSeconds, write its status.

- `quota_event` (kopf.on.event: no finalizer, no annotations on the object) puts every GPUQuota's
  parsed spec on QUOTAS, the board the services' loops publish their needs on
  (control.quota.QuotaBoard), and takes it off when the quota is deleted. A spec the model
  refuses (the CRD's schema lets almost nothing through) keeps the last valid one, if any, and is
  reported as Ready=False, InvalidSpec.
- `arbitrate_forever` (started by kopf_app at startup): one coroutine for all quotas; each due
  quota's arbitration is core.quota.arbitrate over the needs on the board; its status is patched
  when something material changed or once a minute. The services' loops read their allocation
  from the board at their next tick and cap their plans (control.quota.QuotaPolicy).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import kopf
from pydantic import ValidationError

from gpufleet.api.models import GROUP, VERSION
from gpufleet.api.quota import PLURAL, GPUQuotaSpec
from gpufleet.control.quota import QuotaBoard, invalid_quota_status, quota_status

log = logging.getLogger("gpufleet.quota")

QUOTAS = QuotaBoard()
HEARTBEAT_S = 60.0
_meta: dict[str, dict[str, Any]] = {}  # name -> generation, status as read, last write, invalid message


def parse(spec: Mapping[str, Any]) -> GPUQuotaSpec | str:
    try:
        return GPUQuotaSpec.model_validate(dict(spec))
    except ValidationError as exc:
        return "; ".join(f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())[:1000]


@kopf.on.event(GROUP, VERSION, PLURAL)
def quota_event(type: str | None, name: str, body: kopf.Body, spec: kopf.Spec, **_: Any) -> None:
    if type == "DELETED":
        QUOTAS.set_quota(name, None)
        _meta.pop(name, None)
        return
    meta = _meta.setdefault(name, {"written_at": 0.0, "written": None})
    meta["generation"] = body.metadata.get("generation")
    meta["status"] = dict(body.get("status") or {})
    parsed = parse(spec)
    if isinstance(parsed, str):
        meta["invalid"] = parsed
        return
    meta["invalid"] = None
    QUOTAS.set_quota(name, parsed)
    meta.setdefault("due", 0.0)


def _material(status: Mapping[str, Any]) -> Any:
    out = {k: v for k, v in status.items() if k != "lastArbitration"}
    out["conditions"] = [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in status.get("conditions", ())]
    return out


def arbitrate_due(now: float) -> list[tuple[str, dict[str, Any]]]:
    """Run every due quota's arbitration; the status patches worth writing (name, status)."""
    writes = []
    for name, meta in list(_meta.items()):
        if now < meta.get("due", 0.0):
            continue
        spec = QUOTAS.quotas.get(name)
        old = meta.get("written") or meta.get("status") or {}
        if meta.get("invalid"):
            status = invalid_quota_status(meta["invalid"], now=now, generation=meta.get("generation"), old=old)
            meta["due"] = now + 10.0
        elif spec is not None:
            got = QUOTAS.arbitrate(name, now=now)
            meta["due"] = now + spec.interval_seconds
            if got is None:
                continue
            status = quota_status(name, spec, got[0], got[1], now=now, generation=meta.get("generation"), old=old)
        else:
            continue
        if meta.get("written") is None or _material(status) != _material(meta["written"]) \
                or now - meta["written_at"] >= HEARTBEAT_S:
            writes.append((name, status))
    return writes


async def arbitrate_forever(patch: Callable[[str, dict[str, Any]], None], stop: asyncio.Event) -> None:
    """Every second: arbitrate the due quotas and write their statuses (on a thread: the patch blocks)."""
    while not stop.is_set():
        now = time.time()
        for name, status in arbitrate_due(now):
            try:
                await asyncio.to_thread(patch, name, status)
            except Exception as exc:  # noqa: BLE001 - a failed write is tried again; arbitration goes on
                log.warning("GPUQuota %s: status not written: %s", name, f"{type(exc).__name__}: {exc}"[:300])
                continue
            if name in _meta:
                _meta[name]["written"], _meta[name]["written_at"] = status, now
        try:
            await asyncio.wait_for(stop.wait(), timeout=1.0)
        except asyncio.TimeoutError:
            pass
