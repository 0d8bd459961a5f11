"""The Helm chart on the real local API server: install, upgrade, uninstall; and the operator run
out of cluster with the chart's ServiceAccount token, so its RBAC is exercised for real.

Isolation from other operators. The session `operator` fixture (cluster-admin, all namespaces) may
be running when these tests run, and it would reconcile our InferenceService too, so "children were
created, status was written" would prove nothing about the chart's RBAC. These tests never request
that fixture, and in addition they *fence* their namespace with a ValidatingAdmissionPolicy: in it,
only the chart's ServiceAccount may create the children, scale them, write the InferenceService
(kopf's annotations and finalizer) or its status, and change the operator's pod label/annotation.
Every such write that succeeds was therefore made with the chart's token, whatever else runs
against the cluster; the fence's own effect is checked before the operator starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.support import Cluster, Process, free_port
from tests.support import BASE_RULES, HELM, ROOT, wait_for

pytestmark = pytest.mark.cluster

CHART = ROOT / "charts" / "gpufleet"
RELEASE = "gf"  # fullname gf-gpufleet; cluster-scoped names gf-gpufleet-<namespace>


def helm(cluster: Cluster, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([HELM, *args], env=cluster.env, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def get_cluster_scoped(cluster: Cluster, kind: str, name: str) -> dict[str, Any] | None:
    proc = cluster.kubectl("get", kind, name, "-o", "json", check=False)
    if proc.returncode != 0:
        assert "NotFound" in proc.stderr, proc.stderr
        return None
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def can_i(cluster: Cluster, sa: str, *args: str) -> bool:
    proc = cluster.kubectl("auth", "can-i", *args, f"--as={sa}", check=False)
    return proc.stdout.strip() == "yes"


def role_rules(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


@pytest.fixture
def release(cluster: Cluster, namespace: str) -> Iterator[str]:
    """The release name; uninstalled at teardown if a test left it installed."""
    yield RELEASE
    helm(cluster, "uninstall", RELEASE, "-n", namespace, "--wait", "--timeout", "120s", check=False)


def test_install_upgrade_uninstall(cluster: Cluster, namespace: str, release: str) -> None:
    cluster_name = f"{release}-gpufleet-{namespace}"
    sa = f"system:serviceaccount:{namespace}:{release}-gpufleet"
    helm(cluster, "install", release, str(CHART), "-n", namespace,
         "--set", "operator.prometheusUrl=http://prometheus.monitoring.svc:9090")

    # The objects, as the API server stores them.
    deployment = cluster.get("deployment", f"{release}-gpufleet", namespace)
    assert deployment is not None and deployment["spec"]["replicas"] == 2
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "--prometheus-url=http://prometheus.monitoring.svc:9090" in container["args"]
    assert container["resources"]["requests"] == {"cpu": "100m", "memory": "256Mi"}
    for kind, name in (("serviceaccount", f"{release}-gpufleet"), ("service", f"{release}-gpufleet-metrics"),
                       ("poddisruptionbudget", f"{release}-gpufleet")):
        assert cluster.get(kind, name, namespace) is not None, kind
    role = get_cluster_scoped(cluster, "clusterrole", cluster_name)
    assert role is not None
    assert role_rules(role) == {**BASE_RULES, ("kopf.dev", "clusterkopfpeerings"): {"list", "watch", "patch"}}
    binding = get_cluster_scoped(cluster, "clusterrolebinding", cluster_name)
    assert binding is not None and binding["subjects"][0]["namespace"] == namespace
    assert get_cluster_scoped(cluster, "clusterkopfpeering", cluster_name) is not None
    assert get_cluster_scoped(cluster, "crd", "inferenceservices.gpufleet.io") is not None

    # What the bound ServiceAccount may do, asked of the API server's authorizer.
    assert can_i(cluster, sa, "patch", "deployments", "--subresource=scale", "-n", "default")
    assert can_i(cluster, sa, "patch", "inferenceservices.gpufleet.io", "--subresource=status", "-A")
    assert can_i(cluster, sa, "list", "nodes")
    assert not can_i(cluster, sa, "list", "secrets", "-n", namespace)
    assert not can_i(cluster, sa, "delete", "deployments", "-n", "default")
    assert not can_i(cluster, sa, "update", "inferenceservices.gpufleet.io", "-n", "default")
    assert not can_i(cluster, sa, "create", "pods", "-n", "default")

    # Upgrade with changed values: the Deployment follows.
    generation = deployment["metadata"]["generation"]
    helm(cluster, "upgrade", release, str(CHART), "-n", namespace, "--reuse-values",
         "--set", "replicaCount=3", "--set", "resources.requests.cpu=250m")
    upgraded = cluster.get("deployment", f"{release}-gpufleet", namespace)
    assert upgraded is not None and upgraded["metadata"]["generation"] > generation
    assert upgraded["spec"]["replicas"] == 3
    assert upgraded["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "250m"
    assert "--prometheus-url=http://prometheus.monitoring.svc:9090" in \
        upgraded["spec"]["template"]["spec"]["containers"][0]["args"]  # --reuse-values kept it
    history = json.loads(helm(cluster, "history", release, "-n", namespace, "-o", "json").stdout)
    assert [h["revision"] for h in history] == [1, 2] and history[-1]["status"] == "deployed"

    # Uninstall removes everything it created, cluster-scoped objects included; the CRD stays
    # (Helm never deletes crds/, so InferenceServices survive an operator uninstall).
    helm(cluster, "uninstall", release, "-n", namespace, "--wait", "--timeout", "120s")
    assert cluster.get("deployment", f"{release}-gpufleet", namespace) is None
    assert cluster.get("serviceaccount", f"{release}-gpufleet", namespace) is None
    assert get_cluster_scoped(cluster, "clusterrole", cluster_name) is None
    assert get_cluster_scoped(cluster, "clusterrolebinding", cluster_name) is None
    assert get_cluster_scoped(cluster, "clusterkopfpeering", cluster_name) is None
    assert get_cluster_scoped(cluster, "crd", "inferenceservices.gpufleet.io") is not None


def test_namespaced_mode_grants_writes_only_in_the_watched_namespace(
    cluster: Cluster, namespace: str, release: str
) -> None:
    """watchNamespaces: the chart's ServiceAccount may patch pods and Deployments in the watched
    namespace (a Role) and nowhere else; cluster-wide it only reads nodes, CRDs and namespaces."""
    sa = f"system:serviceaccount:{namespace}:{release}-gpufleet"
    watched = f"{namespace}-w"
    cluster.kubectl("create", "namespace", watched)
    try:
        helm(cluster, "install", release, str(CHART), "-n", namespace,
             "--set", f"operator.watchNamespaces={{{watched}}}")
        for verb, what in (("patch", "pods"), ("patch", "deployments"), ("create", "deployments"),
                           ("patch", "inferenceservices.gpufleet.io"), ("create", "events"),
                           ("list", "horizontalpodautoscalers.autoscaling")):
            assert can_i(cluster, sa, verb, what, "-n", watched), (verb, what)
        assert can_i(cluster, sa, "patch", "deployments", "--subresource=scale", "-n", watched)
        for verb, what in (("patch", "pods"), ("patch", "deployments"), ("create", "deployments"),
                           ("patch", "inferenceservices.gpufleet.io"), ("list", "pods")):
            assert not can_i(cluster, sa, verb, what, "-n", "default"), (verb, what)
            assert not can_i(cluster, sa, verb, what, "-A"), (verb, what)
        assert not can_i(cluster, sa, "patch", "deployments", "--subresource=scale", "-n", "default")
        assert can_i(cluster, sa, "list", "nodes") and not can_i(cluster, sa, "patch", "nodes")
        assert can_i(cluster, sa, "watch", "customresourcedefinitions.apiextensions.k8s.io")
    finally:
        helm(cluster, "uninstall", release, "-n", namespace, "--wait", "--timeout", "120s", check=False)
        cluster.kubectl("delete", "namespace", watched, "--wait=false", check=False)


# -- the operator with the chart's ServiceAccount token ----------------------------------------

def fence(namespace: str, sa: str) -> list[dict[str, Any]]:
    """A ValidatingAdmissionPolicy (+ binding) letting only `sa` make the operator's writes in
    `namespace`. Controllers' own writes (pods by the ReplicaSet controller, status by kwok,
    Deployment annotations by the deployment controller) match none of these rules or conditions."""
    name = f"gpufleet-test-fence-{namespace}"
    unchanged = ("object.metadata.?labels[?'gpufleet.io/serving'] == oldObject.metadata.?labels[?'gpufleet.io/serving']"
                 " && object.metadata.?annotations[?'controller.kubernetes.io/pod-deletion-cost']"
                 " == oldObject.metadata.?annotations[?'controller.kubernetes.io/pod-deletion-cost']")
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "resourceRules": [
                    {"apiGroups": ["apps"], "apiVersions": ["*"], "operations": ["CREATE"],
                     "resources": ["deployments"]},
                    {"apiGroups": [""], "apiVersions": ["*"], "operations": ["CREATE"], "resources": ["services"]},
                    {"apiGroups": ["policy"], "apiVersions": ["*"], "operations": ["CREATE"],
                     "resources": ["poddisruptionbudgets"]},
                    {"apiGroups": ["apps"], "apiVersions": ["*"], "operations": ["UPDATE"],
                     "resources": ["deployments/scale"]},
                    {"apiGroups": ["gpufleet.io"], "apiVersions": ["*"], "operations": ["UPDATE"],
                     "resources": ["inferenceservices", "inferenceservices/status"]},
                    {"apiGroups": [""], "apiVersions": ["*"], "operations": ["UPDATE"], "resources": ["pods"]},
                ],
            },
            "validations": [{
                "expression": f"request.userInfo.username == '{sa}'"
                              f" || (request.resource.resource == 'pods' && request.subResource == ''"
                              f" && ({unchanged}))",
                "message": f"test fence: only {sa} makes the operator's writes in this namespace",
            }],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"]},
    }
    return [policy, binding]


def service_account_kubeconfig(cluster: Cluster, namespace: str, sa: str, path: Path) -> Path:
    """A kubeconfig with the cluster's server and CA and only the ServiceAccount's token."""
    admin = json.loads(cluster.kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
    token = cluster.kubectl("create", "token", sa, "-n", namespace, "--duration", "1h").stdout.strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": admin["clusters"][0]["cluster"]}],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": sa, "namespace": namespace}}],
        "current-context": "sa",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def inference_service(namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "gpufleet.io/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"gpufleet.io/team": "platform", "gpufleet.io/project": "helm-test"}},
        "spec": {
            "model": {"name": name, "backend": "triton"},
            "replicas": {"min": 1, "max": 3},
            "scaling": {"intervalSeconds": 1},
            "warmPool": {"size": 0, "max": 1},
            "capacity": {"onDemand": {"nodeSelector": {"karpenter.sh/capacity-type": "on-demand"}},
                         "spot": {"enabled": False}},
            "template": {
                "metadata": {"annotations": {"kwok.gpufleet.io/ready-delay": "1s"}},
                "spec": {"containers": [{"name": "triton", "image": "nvcr.io/nvidia/tritonserver:25.01-py3",
                                         "resources": {"limits": {"nvidia.com/gpu": 1}}}]},
            },
        },
    }


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text: str = response.read().decode()
        return text


def sample(text: str, metric: str, namespace: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(metric + "{") and f'namespace="{namespace}"' in line and f'name="{name}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


def operator_owned_fields(isvc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(manager, fieldsV1) of every writer of the InferenceService other than the test's kubectl."""
    return [(m["manager"], m.get("fieldsV1", {})) for m in isvc["metadata"].get("managedFields", [])
            if not m["manager"].startswith("kubectl")]


@pytest.fixture
def fence_namespace(cluster: Cluster, namespace: str) -> Iterator[Callable[[], None]]:
    """Raises the fence when called (after `helm install`, whose writes it would deny); removed at
    teardown, before the namespace goes."""
    objects = fence(namespace, f"system:serviceaccount:{namespace}:{RELEASE}-gpufleet")
    def raise_fence() -> None:
        cluster.apply(yaml.safe_dump_all(objects))

    yield raise_fence
    for obj in reversed(objects):
        cluster.kubectl("delete", obj["kind"], obj["metadata"]["name"], "--ignore-not-found", check=False)


@dataclass
class ChartAccount:
    """The chart installed in namespaced mode, the namespace fenced, and a kubeconfig holding only a
    token of the chart's ServiceAccount."""

    cluster: Cluster
    namespace: str
    peering: str
    kubeconfig: Path
    logs: Path

    def kubectl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["kubectl", "--kubeconfig", str(self.kubeconfig), *args], capture_output=True,
                              text=True, timeout=60, env={**os.environ, "KUBECONFIG": str(self.kubeconfig)})

    def operator(self, label: str) -> tuple[Process, int]:
        """The operator, out of cluster, as the ServiceAccount; returns it and its metrics port."""
        health, metrics = free_port(), free_port()
        # kopf's own login reads $KUBECONFIG; POD_ID is kopf's peer identity (the chart sets the pod name).
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "POD_ID": label}
        proc = Process(label, [
            sys.executable, "-m", "gpufleet.cli", "operator", "--kubeconfig", str(self.kubeconfig),
            "--namespace", self.namespace, "--peering", self.peering, "--health", f"127.0.0.1:{health}",
            "--metrics-port", str(metrics), "--metrics-host", "127.0.0.1", "--min-interval", "1",
            "--status-heartbeat", "1",
        ], self.logs / f"{label}.log", env)
        return proc, metrics


@pytest.fixture
def chart_account(cluster: Cluster, namespace: str, release: str, fence_namespace: Callable[[], None],
                  tmp_path: Path) -> ChartAccount:
    # Namespaced mode: the chart's KopfPeering lives in the watched namespace. The chart's own pods
    # are KWOK pods (no process runs in them), so the only operators using this account are ours.
    helm(cluster, "install", release, str(CHART), "-n", namespace,
         "--set", f"operator.watchNamespaces={{{namespace}}}", "--set", "replicaCount=1")
    kubeconfig = service_account_kubeconfig(cluster, namespace, f"{release}-gpufleet", tmp_path / "sa.kubeconfig")
    fence_namespace()
    # The fence is in force (admission policies take a moment to load): even cluster-admin is denied.
    # A server-side dry run goes through admission without creating anything.
    wait_for(lambda: "test fence" in cluster.kubectl(
        "create", "service", "clusterip", "fence-probe", "--tcp=80", "-n", namespace, "--dry-run=server",
        check=False).stderr, timeout=60, what="the admission fence to deny cluster-admin")
    return ChartAccount(cluster, namespace, f"{release}-gpufleet-{namespace}", kubeconfig, tmp_path)


def status_time(cluster: Cluster, namespace: str, name: str) -> str | None:
    obj = cluster.get("inferenceservice", name, namespace) or {}
    decision: dict[str, Any] = obj.get("status", {}).get("lastDecision") or {}
    return decision.get("time")


def test_operator_with_the_charts_service_account(chart_account: ChartAccount) -> None:
    cluster, namespace, peering = chart_account.cluster, chart_account.namespace, chart_account.peering
    # Forbidden with the chart's token: reading secrets, deleting children, touching other kinds.
    for args in (["get", "secrets", "-n", namespace], ["create", "namespace", f"{namespace}-x"],
                 ["delete", "deployment", "anything", "-n", namespace],
                 ["get", "configmaps", "-n", namespace]):
        denied = chart_account.kubectl(*args)
        assert denied.returncode != 0 and "forbidden" in denied.stderr.lower(), (args, denied.stderr)

    proc, metrics = chart_account.operator("sa-operator")
    name = "fenced"
    try:
        proc.wait_log("Activity 'configure' succeeded")
        cluster.apply(inference_service(namespace, name))

        # Children, created by the ServiceAccount (nobody else may, in this namespace).
        def children() -> list[dict[str, Any]] | None:
            found = [cluster.get(k, n, namespace) for k, n in (
                ("deployment", f"{name}-ondemand"), ("deployment", f"{name}-spot"),
                ("service", name), ("poddisruptionbudget", name))]
            return found if all(found) else None  # type: ignore[return-value]

        made = wait_for(children, timeout=90, what="children created with the ServiceAccount's token")
        assert made is not None
        isvc = cluster.get("inferenceservice", name, namespace)
        assert isvc is not None
        for child in made:
            assert child["metadata"]["ownerReferences"][0]["uid"] == isvc["metadata"]["uid"]

        # Status written and replicas scaled through /scale by the ServiceAccount's loop.
        def status_written() -> dict[str, Any] | None:
            obj = cluster.get("inferenceservice", name, namespace)
            status = (obj or {}).get("status", {})
            return obj if status.get("lastDecision") and status.get("observedGeneration") == 1 else None

        isvc = wait_for(status_written, timeout=90, what="status written by the ServiceAccount's loop")
        assert isvc is not None
        assert {c["type"] for c in isvc["status"]["conditions"]} >= {"Ready", "MetricsAvailable", "Scaling"}
        wait_for(lambda: (cluster.get("deployment", f"{name}-ondemand", namespace) or {})
                 .get("spec", {}).get("replicas") == 1, timeout=60, what="on-demand Deployment at min")

        # Serving label on the pod: a pod patch by the ServiceAccount.
        wait_for(lambda: any(p["metadata"].get("labels", {}).get("gpufleet.io/serving") == "true"
                             for p in cluster.list("pods", namespace, f"gpufleet.io/inference-service={name}")),
                 timeout=90, what="a pod promoted into the Service")

        # Kopf peering: this process's keep-alive in the chart's KopfPeering (a patch by the account).
        wait_for(lambda: (cluster.get("kopfpeering", peering, namespace) or {}).get("status"), timeout=60,
                 what="keep-alive in the chart's KopfPeering")

        # The operator's metrics port, after ticks of this service.
        def ticked() -> str | None:
            text = scrape(metrics)
            return text if (sample(text, "gpufleet_loop_duration_seconds_count", namespace, name) or 0) >= 2 else None

        text = wait_for(ticked, timeout=60, what="gpufleet metrics after two ticks of the service")
        assert text is not None
        assert sample(text, "gpufleet_replicas", namespace, name) is not None
        assert 'team="platform"' in text and 'project="helm-test"' in text
        assert sample(text, "gpufleet_errors_total", namespace, name) is None

        # GitOps manners: the operator's writers own only status, kopf's annotations and the finalizer.
        isvc = json.loads(cluster.kubectl("get", "inferenceservice", name, "-n", namespace, "-o", "json",
                                          "--show-managed-fields").stdout)
        owned = operator_owned_fields(isvc)
        assert owned, "the operator should have written status and its annotations"
        for manager, fields in owned:
            assert set(fields) <= {"f:metadata", "f:status"}, (manager, fields)
            meta = fields.get("f:metadata", {})
            assert set(meta) <= {"f:annotations", "f:finalizers"}, (manager, meta)
            for key in meta.get("f:annotations", {}):
                assert key == "." or key.startswith("f:gpufleet.io/"), (manager, key)

        # Deletion with the operator running: kopf removes its finalizer (a patch by the account).
        cluster.kubectl("delete", "inferenceservice", name, "-n", namespace, "--timeout=60s")
        wait_for(lambda: cluster.get("deployment", f"{name}-ondemand", namespace) is None, timeout=90,
                 what="children garbage-collected after the InferenceService went")
        log = proc.log.read_text()
        for word in ("Forbidden", "forbidden", "403", "Not enough permissions"):
            assert word not in log, f"{word!r} in the operator's log:\n{log[-3000:]}"
    finally:
        proc.stop()
        sys.stderr.write(f"\n--- sa-operator log (tail) ---\n{proc.log.read_text()[-3000:]}\n")


def test_two_replicas_one_active_through_peering(chart_account: ChartAccount) -> None:
    """The chart's replicaCount: 2 story: two operators on one peering object (each with its own
    random priority), one works, the other waits; when the active one stops, the other takes over."""
    cluster, namespace = chart_account.cluster, chart_account.namespace
    name = "peered"
    first, first_metrics = chart_account.operator("replica-a")
    second, second_metrics = chart_account.operator("replica-b")
    replicas = {first: first_metrics, second: second_metrics}
    try:
        for proc in replicas:
            proc.wait_log("Activity 'configure' succeeded")

        # Both keep-alives in the chart's KopfPeering; the higher (random) priority is the active one.
        # (Logs cannot tell: a replica that starts below a running one is paused from the start and
        # never logs "Pausing".)
        def peers() -> dict[str, int] | None:
            status = (cluster.get("kopfpeering", chart_account.peering, namespace) or {}).get("status") or {}
            found = {k: int(v["priority"]) for k, v in status.items() if k in ("replica-a", "replica-b")}
            return found if len(found) == 2 else None

        priorities = wait_for(peers, timeout=60, what="both replicas' keep-alives in the KopfPeering")
        assert priorities is not None and priorities["replica-a"] != priorities["replica-b"]
        active, waiting = (first, second) if priorities["replica-a"] > priorities["replica-b"] else (second, first)
        cluster.apply(inference_service(namespace, name))
        wait_for(lambda: status_time(cluster, namespace, name), timeout=90, what="status from the active replica")
        # The status is written ahead of the fleet change, the loop's duration once the step ends.
        wait_for(lambda: (sample(scrape(replicas[active]), "gpufleet_loop_duration_seconds_count", namespace, name)
                          or 0) >= 1, timeout=30, what="the active replica's loop duration recorded")
        assert sample(scrape(replicas[waiting]), "gpufleet_loop_duration_seconds_count", namespace, name) is None

        # A graceful stop withdraws the keep-alive: the standby resumes and runs the loop.
        active.stop()
        waiting.wait_log("Resuming operations after the pause", timeout=60)
        wait_for(lambda: (sample(scrape(replicas[waiting]), "gpufleet_loop_duration_seconds_count", namespace, name)
                          or 0) >= 2, timeout=60, what="the former standby's loop ticking")
        before = status_time(cluster, namespace, name)
        wait_for(lambda: status_time(cluster, namespace, name) != before, timeout=30,
                 what="status still moving after the takeover")
        cluster.kubectl("delete", "inferenceservice", name, "-n", namespace, "--timeout=60s")
    finally:
        for proc in replicas:
            proc.stop()
            sys.stderr.write(f"\n--- {proc.name} log (tail) ---\n{proc.log.read_text()[-2000:]}\n")
