"""docs/gitops.md ships code users paste into Argo CD: run it here.

- the InferenceService health check (Lua 5.1, the dialect of Argo CD's gopher-lua) against statuses
  rendered by the operator's own status functions;
- the ignoreDifferences jq path expressions (with jq), which must strip exactly the operator's
  annotations and finalizer.
Each part is skipped when its interpreter is not installed (`apt-get install lua5.1 jq`).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from gpufleet.api.models import InferenceServiceSpec
from gpufleet.control import status as render
from gpufleet.core.types import ON_DEMAND, FleetState, Plan, Replica, ReplicaState
from tests.support import ROOT

DOC = (ROOT / "docs" / "gitops.md").read_text()
SPEC = InferenceServiceSpec.model_validate({
    "model": {"name": "chat"}, "replicas": {"min": 2, "max": 4},
    "template": {"spec": {"containers": [{"name": "triton", "image": "triton"}]}},
})


def yaml_blocks() -> list[dict[str, Any]]:
    return [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", DOC, flags=re.S)]


def argocd_cm(key: str) -> str:
    for block in yaml_blocks():
        data = block.get("data", {}) if isinstance(block, dict) else {}
        if key in data:
            value: str = data[key]
            return value
    raise AssertionError(f"{key} not in docs/gitops.md")


def lua_literal(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid Lua for ASCII text
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    return "{" + ", ".join(f"[{json.dumps(k)}] = {lua_literal(v)}" for k, v in value.items()) + "}"


def health(obj: dict[str, Any]) -> tuple[str, str]:
    script = argocd_cm("resource.customizations.health.gpufleet.io_InferenceService")
    program = (f"local obj = {lua_literal(obj)}\n"
               f"local function check()\n{script}\nend\n"
               "local hs = check()\nio.write(hs.status, '\\n', hs.message or '')\n")
    proc = subprocess.run(["lua5.1", "-"], input=program, capture_output=True, text=True, timeout=10)
    assert proc.returncode == 0, proc.stderr
    status, _, message = proc.stdout.partition("\n")
    return status, message


def conditions(fleet: FleetState, *, safe_mode: bool = False) -> list[dict[str, Any]]:
    """The conditions control.status.render_status renders, from the operator's own status functions."""
    plan = Plan(serving=2, standby=0, on_demand=2, spot=0, reason="SafeMode" if safe_mode else "QueueDepth",
                message="m", safe_mode=safe_mode)
    ready, reason, message = render.ready_condition(fleet, SPEC)
    conds = render.set_condition([], type="Ready", status=ready, reason=reason, message=message, now=0.0,
                                 generation=1)
    conds = render.set_condition(conds, type="MetricsAvailable", status=not safe_mode,
                                 reason="MetricsUnavailable" if safe_mode else "MetricsOK", message="",
                                 now=0.0, generation=1)
    degraded, reason, message = render.degraded_condition(plan, fleet)
    conds = render.set_condition(conds, type="Degraded", status=degraded, reason=reason, message=message,
                                 now=0.0, generation=1)
    return [c.model_dump(by_alias=True, exclude_none=True) for c in conds]


def isvc(status: dict[str, Any] | None, generation: int = 1) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"name": "chat", "generation": generation}}
    if status is not None:
        obj["status"] = status
    return obj


def replicas(*states: ReplicaState) -> FleetState:
    return FleetState(replicas=tuple(Replica(f"p{i}", ON_DEMAND, s, created_at=0.0,
                                             ready_at=None if s == ReplicaState.starting else 1.0)
                                     for i, s in enumerate(states)))


@pytest.mark.skipif(shutil.which("lua5.1") is None, reason="lua5.1 not installed")
def test_argocd_health_check() -> None:
    serving = replicas(ReplicaState.serving, ReplicaState.serving)
    starting = replicas(ReplicaState.serving, ReplicaState.starting)
    assert health(isvc(None))[0] == "Progressing"
    assert health(isvc({"observedGeneration": 1, "conditions": conditions(serving)}, generation=2))[0] == "Progressing"
    assert health(isvc({"observedGeneration": 1, "conditions": conditions(serving)})) == \
        ("Healthy", "2 replicas serving (min 2)")
    status, message = health(isvc({"observedGeneration": 1, "conditions": conditions(serving, safe_mode=True)}))
    assert status == "Degraded" and message.startswith("SafeMode: ")
    budget = [*conditions(serving), {"type": "BudgetExceeded", "status": "True", "reason": "Capped", "message": "at 12/h"}]
    assert health(isvc({"observedGeneration": 1, "conditions": budget})) == \
        ("Healthy", "2 replicas serving (min 2); budget: at 12/h")
    assert health(isvc({"observedGeneration": 1, "conditions": conditions(starting)}))[0] == "Progressing"
    invalid = [{"type": "Ready", "status": "False", "reason": "InvalidSpec", "message": "spec.replicas.min: bad"}]
    assert health(isvc({"conditions": invalid})) == ("Degraded", "spec.replicas.min: bad")
    # Refused or blocked generations are failures, not waits, although observedGeneration lags.
    assert health(isvc({"observedGeneration": 1, "conditions": invalid}, generation=2)) == \
        ("Degraded", "spec.replicas.min: bad")
    clash = [{"type": "Ready", "status": "False", "reason": "Conflict", "message": "Deployment chat-ondemand exists"}]
    assert health(isvc({"conditions": clash})) == ("Degraded", "Deployment chat-ondemand exists")
    assert health(isvc({"observedGeneration": 1, "conditions": clash}, generation=2))[0] == "Degraded"
    # Shadow mode: a target that cannot be read fails; watching it is healthy (nothing to wait for).
    gone = [{"type": "Ready", "status": "False", "reason": "TargetUnavailable", "message": "spec.targetRef: gone"}]
    assert health(isvc({"observedGeneration": 1, "conditions": gone})) == ("Degraded", "spec.targetRef: gone")
    watching = [{"type": "Ready", "status": "True", "reason": "Shadowing", "message": "watching Deployment/web"}]
    assert health(isvc({"observedGeneration": 1, "conditions": watching})) == ("Healthy", "watching Deployment/web")
    hpa = FleetState(replicas=serving.replicas)
    plan = Plan(serving=2, standby=0, on_demand=2, spot=0, reason="QueueDepth", message="m")
    degraded, reason, message = render.degraded_condition(plan, hpa, ["HorizontalPodAutoscaler web targets Deployment chat-ondemand"])
    assert (degraded, reason) == (True, "AutoscalerConflict")
    autoscaled = [c for c in conditions(serving) if c["type"] != "Degraded"] + [
        {"type": "Degraded", "status": "True", "reason": reason, "message": message}]
    assert health(isvc({"observedGeneration": 1, "conditions": autoscaled}))[0] == "Degraded"
    spot = FleetState(replicas=serving.replicas, spot_unavailable=True)
    assert health(isvc({"observedGeneration": 1, "conditions": conditions(spot)}))[0] == "Degraded"


def test_health_check_knows_the_operators_reason_codes() -> None:
    source = (ROOT / "operator" / "gpufleet" / "kopf_app.py").read_text()
    # The Ready=False reasons that are not transient, and the ones the health check names.
    assert 'reason="InvalidSpec"' in source and '("Conflict", conflicts)' in source
    script = argocd_cm("resource.customizations.health.gpufleet.io_InferenceService")
    assert '"InvalidSpec"' in script and '"Conflict"' in script


@pytest.mark.skipif(shutil.which("jq") is None, reason="jq not installed")
def test_argocd_ignore_differences_strip_only_the_operators_fields() -> None:
    rules = yaml.safe_load(argocd_cm("resource.customizations.ignoreDifferences.gpufleet.io_InferenceService"))
    live = {"metadata": {"annotations": {"gpufleet.io/last-handled-configuration": "{}",
                                         "gpufleet.io/kopf-managed": "yes", "team.example/owner": "me"},
                         "finalizers": ["gpufleet.io/operator", "example.com/keep"]},
            "spec": {"replicas": {"min": 1}}}
    program = " | ".join(f"del({expr})" for expr in rules["jqPathExpressions"])
    for obj, expected in (
        (live, {"metadata": {"annotations": {"team.example/owner": "me"}, "finalizers": ["example.com/keep"]},
                "spec": {"replicas": {"min": 1}}}),
        ({"metadata": {}}, {"metadata": {}}),  # nothing to strip, and no error on missing fields
    ):
        proc = subprocess.run(["jq", "-c", program], input=json.dumps(obj), capture_output=True, text=True,
                              timeout=10)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout) == expected
