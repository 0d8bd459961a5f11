"""The Helm chart, rendered offline: lint, schema, the CRD copy, hardening, and least-privilege RBAC.

Needs only the helm binary that hack/build-cluster-bins.sh builds (no cluster)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import BASE_RULES, CLUSTER_RULES, HELM, NAMESPACED_RULES, ROOT

CHART = ROOT / "charts" / "gpufleet"
# helm built from source without version ldflags assumes Kubernetes v1.20 for `template`.
KUBE_VERSION = "1.33.0"

pytestmark = pytest.mark.skipif(not Path(HELM).exists(), reason="helm not built: run `make bins`")

def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HELM, *args], capture_output=True, text=True, timeout=120, check=False)


def render(*sets: str, namespace: str = "gf", release: str = "rel") -> list[dict[str, Any]]:
    args = ["template", release, str(CHART), "-n", namespace, "--kube-version", KUBE_VERSION]
    for s in sets:
        args += ["--set", s]
    proc = helm(*args)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind}"
    return found[0]


def rules(docs: list[dict[str, Any]], role: dict[str, Any] | None = None) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in (role or one(docs, "ClusterRole"))["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def test_helm_lint_strict() -> None:
    proc = helm("lint", str(CHART), "--strict")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_chart_crd_is_the_generated_one() -> None:
    generated = (ROOT / "crds" / "gpufleet.io_inferenceservices.yaml").read_bytes()
    assert (CHART / "crds" / "gpufleet.io_inferenceservices.yaml").read_bytes() == generated, \
        "charts/gpufleet/crds/ drifted from crds/: run `make crds`"


def test_default_render_has_every_object() -> None:
    kinds = sorted(d["kind"] for d in render())
    assert kinds == sorted(["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service",
                            "PodDisruptionBudget", "ClusterKopfPeering"])


def test_operator_pod_is_hardened_and_probed() -> None:
    deployment = one(render(), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert deployment["spec"]["replicas"] == 2
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
    # Writable /tmp for the discovery cache on a read-only root filesystem.
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    args = container["args"]
    assert "--health=0.0.0.0:8080" in args and "--metrics-port=9090" in args
    assert "--peering=rel-gpufleet-gf" in args
    assert {"name": "POD_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in container["env"]
    # The two replicas prefer different nodes.
    term = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]


def test_metrics_service_and_optional_service_monitor() -> None:
    docs = render()
    assert not [d for d in docs if d["kind"] == "ServiceMonitor"]
    service = one(docs, "Service")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]
    monitor = one(render("metrics.serviceMonitor.enabled=true"), "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]


@pytest.mark.parametrize("sets", [(), ("operator.watchNamespaces={a,b}",), ("peering.enabled=false", "replicaCount=1")])
def test_cluster_role_has_no_wildcard(sets: tuple[str, ...]) -> None:
    for doc in render(*sets):
        if doc["kind"] not in ("ClusterRole", "Role"):
            continue
        for rule in doc["rules"]:
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[key], rule
            assert "resourceNames" not in rule and "nonResourceURLs" not in rule


def test_cluster_role_is_exactly_what_the_operator_uses() -> None:
    assert rules(render()) == {**BASE_RULES, ("kopf.dev", "clusterkopfpeerings"): {"list", "watch", "patch"}}
    assert rules(render("peering.enabled=false", "replicaCount=1")) == BASE_RULES
    assert not [d for d in render() if d["kind"] in ("Role", "RoleBinding")]
    # Nothing is ever deleted (owner references let the garbage collector do it; a pod leaves by
    # its ReplicaSet or by eviction) and no secrets read.
    flat = render()
    assert all("delete" not in v for v in rules(flat).values())
    assert ("", "secrets") not in rules(flat)


def test_namespaced_mode_grants_writes_only_in_the_watched_namespaces() -> None:
    docs = render("operator.watchNamespaces={a,b}", namespace="ops")
    # Cluster-wide: read-only, cluster-scoped (nodes, CRDs, and namespaces to follow them), but for
    # the status of GPUQuotas (cluster-scoped objects the operator arbitrates).
    cluster_rules = rules(docs)
    assert cluster_rules == {**CLUSTER_RULES, ("", "namespaces"): {"list", "watch"}}
    assert all(verbs <= {"list", "watch"} for key, verbs in cluster_rules.items() if key[1] != "gpuquotas/status")
    # In each watched namespace, a Role with the rest, bound to the chart's ServiceAccount.
    roles = {d["metadata"]["namespace"]: d for d in docs if d["kind"] == "Role"}
    bindings = {d["metadata"]["namespace"]: d for d in docs if d["kind"] == "RoleBinding"}
    assert sorted(roles) == sorted(bindings) == ["a", "b"]
    for ns, role in roles.items():
        assert rules(docs, role) == {**NAMESPACED_RULES, ("kopf.dev", "kopfpeerings"): {"list", "watch", "patch"}}
        binding = bindings[ns]
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                      "name": role["metadata"]["name"]}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "rel-gpufleet", "namespace": "ops"}]
    # Without peering, no peering rule anywhere.
    unpeered = render("operator.watchNamespaces={a}", "peering.enabled=false", "replicaCount=1")
    (role,) = [d for d in unpeered if d["kind"] == "Role"]
    assert rules(unpeered, role) == NAMESPACED_RULES
    assert not [d for d in render("operator.watchNamespaces={a}", "rbac.create=false")
                if d["kind"] in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")]


def test_cluster_scoped_names_include_the_namespace() -> None:
    a, b = render(namespace="team-a"), render(namespace="team-b")
    for kind in ("ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering"):
        assert one(a, kind)["metadata"]["name"] != one(b, kind)["metadata"]["name"]
    binding = one(a, "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "rel-gpufleet", "namespace": "team-a"}]


def test_namespaced_mode_peers_in_each_watched_namespace() -> None:
    docs = render("operator.watchNamespaces={a,b}")
    peerings = [d for d in docs if d["kind"] == "KopfPeering"]
    assert sorted(p["metadata"]["namespace"] for p in peerings) == ["a", "b"]
    args = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=a" in args and "--namespace=b" in args


def test_yaml_1_1_booleans_stay_strings() -> None:
    # Namespaces and releases called "y", "on" or "no" are booleans to a YAML 1.1 parser (Helm's
    # included) unless quoted: the install would fail with "cannot unmarshal bool".
    docs = render("operator.watchNamespaces={no}", "metrics.serviceMonitor.enabled=true", namespace="y", release="on")
    for doc in docs:
        meta = doc["metadata"]
        assert isinstance(meta.get("namespace", ""), str), doc["kind"]
        assert all(isinstance(v, str) for v in meta.get("labels", {}).values()), doc["kind"]
    assert one(docs, "KopfPeering")["metadata"]["namespace"] == "no"
    assert one(docs, "ServiceMonitor")["spec"]["namespaceSelector"]["matchNames"] == ["y"]
    assert one(docs, "ClusterRoleBinding")["subjects"][0]["namespace"] == "y"


def test_guards_reject_bad_values() -> None:
    no_peering = helm("template", "rel", str(CHART), "--kube-version", KUBE_VERSION,
                      "--set", "replicaCount=2", "--set", "peering.enabled=false")
    assert no_peering.returncode != 0 and "needs peering.enabled=true" in no_peering.stderr
    typo = helm("template", "rel", str(CHART), "--kube-version", KUBE_VERSION, "--set", "replicas=3")
    assert typo.returncode != 0 and "additional properties 'replicas' not allowed" in typo.stderr
    bad_url = helm("template", "rel", str(CHART), "--kube-version", KUBE_VERSION,
                   "--set", "operator.prometheusUrl=prometheus:9090")
    assert bad_url.returncode != 0


def test_values_yaml_is_valid_against_its_schema() -> None:
    # `helm lint` validates values.yaml against values.schema.json; here also check the schema
    # lists every top-level key of values.yaml (additionalProperties: false would reject the rest).
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert set(values) <= set(schema["properties"])


def test_price_table_value_reaches_the_operator_as_a_file(tmp_path: Path) -> None:
    from gpufleet.control.pricing import parse_table

    values = tmp_path / "prices.yaml"
    values.write_text(yaml.safe_dump({"operator": {"priceTable": {
        "NVIDIA-H100-80GB-HBM3": {"on-demand": 6.98, "spot": 2.45}, "*": {"on-demand": 4.1}}}}))
    proc = helm("template", "rel", str(CHART), "-n", "gf", "--kube-version", KUBE_VERSION, "-f", str(values))
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    cm = one(docs, "ConfigMap")
    assert parse_table(yaml.safe_load(cm["data"]["prices.yaml"])) == {
        "NVIDIA-H100-80GB-HBM3": {"on-demand": 6.98, "spot": 2.45}, "*": {"on-demand": 4.1}}
    pod = one(docs, "Deployment")["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert "--price-table=/etc/gpufleet/prices.yaml" in container["args"]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/etc/gpufleet")
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == cm["metadata"]["name"]
    assert pod["metadata"]["annotations"]["checksum/price-table"]
    # Without the value: no ConfigMap, no flag.
    plain = render()
    assert not [d for d in plain if d["kind"] == "ConfigMap"]
    assert not any(a.startswith("--price-table") for a in one(plain, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"])
    negative = helm("template", "rel", str(CHART), "--kube-version", KUBE_VERSION,
                    "--set", "operator.priceTable.x.spot=-1")
    assert negative.returncode != 0
