"""The operator image, built from the Dockerfile (hack/image.sh, podman) and run as the chart runs
it: the chart's container (image, args, env, uid 10001, read-only root filesystem, no capabilities,
an emptyDir on /tmp) rendered with `helm template` and turned into `podman run` flags, against the
local real cluster, with a TokenRequest token of the chart's ServiceAccount (its RBAC applied from
the same render) mounted where the kubelet mounts it. The image holds no kubeconfig: the client
can only log in through the in-cluster path (KUBERNETES_SERVICE_HOST/PORT, the token, ca.crt and
namespace under /var/run/secrets/kubernetes.io/serviceaccount).

Host networking (the API server and the session's Prometheus listen on loopback only): the
chart's 0.0.0.0 listeners are moved to 127.0.0.1 on free ports. The service is labelled with a
shard that the chart's --selector names and the session's own operator excludes.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from gpufleet.devenv.prometheus import PrometheusServer
from tests.integration.support import Cluster, Process, free_port, loop_service, set_load, status
from tests.support import HELM, ROOT, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus]

CHART = ROOT / "charts" / "gpufleet"
RELEASE = "gf"
SHARD = "image"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# runc applies podman's default rlimits, which this machine refuses above its own hard limits
# ("error setting rlimit type 7 / type 6: operation not permitted"): set both explicitly.
NOFILE = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
PODMAN = ["podman", "--runtime", "runc"]
LIMITS = ["--ulimit", f"nofile={NOFILE}:{NOFILE}", "--ulimit", "nproc=4096:4096"]


@pytest.fixture(scope="module")
def image() -> str:
    """Built in the test session (a warm build reuses podman's layers and the cached base)."""
    proc = subprocess.run([str(ROOT / "hack/image.sh")], capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, f"hack/image.sh failed:\n{proc.stderr[-4000:]}"
    sys.stderr.write(proc.stderr.splitlines()[-1] + "\n")  # the build's time and the image's size
    return proc.stdout.strip().splitlines()[-1]


def render(namespace: str, values: dict[str, Any], tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    proc = subprocess.run([HELM, "template", RELEASE, str(CHART), "-n", namespace, "--include-crds", "-f", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def service_account_volume(cluster: Cluster, namespace: str, sa: str, into: Path) -> Path:
    """What the kubelet projects into the pod: a TokenRequest token, the cluster's root CA (the
    kube-root-ca.crt ConfigMap the controller manager publishes in every namespace), the namespace."""
    into.mkdir(mode=0o755)
    token = cluster.kubectl("create", "token", sa, "-n", namespace, "--duration", "1h").stdout.strip()
    ca = wait_for(lambda: (cluster.get("configmap", "kube-root-ca.crt", namespace) or {}).get("data", {}).get("ca.crt"),
                  timeout=30, what="kube-root-ca.crt in the namespace")
    for name, text in (("token", token), ("ca.crt", ca), ("namespace", namespace)):
        (into / name).write_text(text)
        (into / name).chmod(0o644)
    return into


def podman_run(deployment: dict[str, Any], *, name: str, sa_volume: Path, server: str) -> list[str]:
    """`podman run` for the chart's operator container, field by field."""
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    pod_sc, sc = pod["securityContext"], container["securityContext"]
    assert pod_sc["runAsNonRoot"] and sc["runAsNonRoot"] and pod_sc["runAsUser"] != 0
    flags = [*PODMAN, "run", "--rm", "--name", name, "--network", "host", *LIMITS,
             "--user", f"{pod_sc['runAsUser']}:{pod_sc['runAsGroup']}", "--group-add", str(pod_sc["fsGroup"])]
    assert sc["readOnlyRootFilesystem"] is True
    flags += ["--read-only", "--read-only-tmpfs=false"]  # writable: only the volumes below
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["allowPrivilegeEscalation"] is False
    flags += ["--cap-drop", "all", "--security-opt", "no-new-privileges"]
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}  # podman's default profile
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in container["volumeMounts"]:
        empty_dir = volumes[mount["name"]]["emptyDir"]
        size = empty_dir["sizeLimit"].removesuffix("Mi")
        flags += ["--mount", f"type=tmpfs,destination={mount['mountPath']},tmpfs-size={size}m,tmpfs-mode=1777"]
    flags += ["--volume", f"{sa_volume}:{SA_DIR}:ro"]
    url = urlsplit(server)
    flags += ["--env", f"KUBERNETES_SERVICE_HOST={url.hostname}", "--env", f"KUBERNETES_SERVICE_PORT={url.port}"]
    for env in container["env"]:
        value = env.get("value")
        if "valueFrom" in env:
            assert env["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}, env
            value = name
        flags += ["--env", f"{env['name']}={value}"]
    assert "command" not in container  # the image's ENTRYPOINT runs `gpufleet operator`
    args = [a.replace("0.0.0.0", "127.0.0.1") for a in container["args"]]
    return [*flags, container["image"], *args]


@pytest.fixture
def chart_objects(cluster: Cluster, namespace: str, prometheus: PrometheusServer, tmp_path: Path) -> Iterator[
        tuple[list[dict[str, Any]], dict[str, int]]]:
    """The chart rendered for one watched namespace; its CRDs, ServiceAccount, RBAC and peering
    applied (not its Deployment: the image run below is its pod). Yields (render, ports)."""
    ports = {"health": free_port(), "metrics": free_port()}
    values = {"replicaCount": 1,
              "health": {"port": ports["health"]},
              "metrics": {"port": ports["metrics"]},
              "operator": {"watchNamespaces": [namespace], "selector": f"gpufleet.io/shard={SHARD}",
                           "prometheusUrl": prometheus.url}}
    docs = render(namespace, values, tmp_path)
    applied = [d for d in docs if d["kind"] in ("CustomResourceDefinition", "ServiceAccount", "ClusterRole",
                                                 "ClusterRoleBinding", "Role", "RoleBinding", "KopfPeering")]
    crds = [d for d in applied if d["kind"] == "CustomResourceDefinition"]
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=yaml.safe_dump_all(crds))
    cluster.kubectl("wait", "--for=condition=Established", "crd", *[d["metadata"]["name"] for d in crds])
    cluster.apply(yaml.safe_dump_all([d for d in applied if d not in crds]))
    yield docs, ports
    for doc in applied:
        if doc["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            cluster.kubectl("delete", doc["kind"], doc["metadata"]["name"], "--ignore-not-found", check=False)


def http_get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as response:
        code: int = response.status
        return code


def test_the_image_runs_as_the_chart_runs_it_and_decides(
    cluster: Cluster, namespace: str, image: str, emulator: str,
    chart_objects: tuple[list[dict[str, Any]], dict[str, int]], tmp_path: Path,
) -> None:
    docs, ports = chart_objects
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    # The chart's image is the one `make image` builds.
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == image
    sa = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    volume = service_account_volume(cluster, namespace, sa, tmp_path / "serviceaccount")
    server = yaml.safe_load(Path(cluster.kubeconfig).read_text())["clusters"][0]["cluster"]["server"]
    # The in-cluster path verifies the API server against ca.crt by this address: its serving
    # certificate must name it (kwokctl's names 127.0.0.1).
    assert urlsplit(server).hostname == "127.0.0.1"

    name = f"gpufleet-image-{namespace}"
    proc = Process("image-operator", podman_run(deployment, name=name, sa_volume=volume, server=server),
                   tmp_path / "operator.log", cluster.env)
    svc = "imaged"
    try:
        proc.wait_log("Activity 'configure' succeeded", timeout=180)
        # What the operator's process (pid 1) really got: uid/gid, no capabilities, no privilege
        # escalation, a read-only root, a writable /tmp, no kubeconfig.
        probe = subprocess.run([*PODMAN, "exec", name, "python3", "-c", (
            "import os, pathlib\n"
            "st = dict(l.split(':', 1) for l in open('/proc/1/status'))\n"
            "env = open('/proc/1/environ').read().split('\\0')\n"
            "try:\n    open('/opt/gpufleet/x', 'w'); ro = False\nexcept OSError as e:\n    ro = e.errno == 30\n"
            "pathlib.Path('/tmp/probe').write_text('ok')\n"
            "print(st['Uid'].split()[0], st['Gid'].split()[0], st['CapEff'].strip(), st['CapBnd'].strip(),"
            " st['NoNewPrivs'].strip(), ro, any(e.startswith('KUBECONFIG=') for e in env),"
            " pathlib.Path('/tmp/.kube').exists())")], capture_output=True, text=True, timeout=60)
        assert probe.returncode == 0, probe.stderr
        assert probe.stdout.split() == ["10001", "10001", "0000000000000000", "0000000000000000", "1", "True",
                                        "False", "False"], probe.stdout
        # kopf's liveness endpoint, as the chart's probes read it.
        assert http_get(f"http://127.0.0.1:{ports['health']}/healthz") == 200

        obj = loop_service(namespace, svc)
        obj["metadata"].setdefault("labels", {})["gpufleet.io/shard"] = SHARD
        cluster.apply(obj)
        # A first decision at the floor, then load: 350 rps at 100 per replica needs 4 replicas.
        wait_for(lambda: status(cluster, namespace, svc).get("lastDecision"), timeout=120,
                 what="a first decision by the image's operator")
        set_load(emulator, namespace, svc, 350.0)
        decided = wait_for(lambda: (d := status(cluster, namespace, svc).get("lastDecision", {})).get("desired", 0) >= 4
                           and d, timeout=180, what="a decision for 4 replicas from the image's operator")
        assert decided
        wait_for(lambda: (cluster.get("deployment", f"{svc}-ondemand", namespace) or {})
                 .get("spec", {}).get("replicas", 0) >= 4, timeout=60, what="the Deployment scaled through /scale")
        # The operator's metrics port (the chart's Service scrapes it), with this service's series.
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['metrics']}/metrics", timeout=5) as response:
            metrics = response.read().decode()
        assert f'namespace="{namespace}"' in metrics and "gpufleet_replicas" in metrics
        log = proc.log.read_text()
        for word in ("Forbidden", "forbidden", "Not enough permissions", "Traceback"):
            assert word not in log, f"{word!r} in the image's log:\n{log[-3000:]}"
        cluster.kubectl("delete", "inferenceservice", svc, "-n", namespace, "--timeout=60s")
    finally:
        proc.stop()
        subprocess.run([*PODMAN, "rm", "-f", "--ignore", name], capture_output=True, timeout=60)
        sys.stderr.write(f"\n--- image operator log (tail) ---\n{proc.log.read_text()[-3000:]}\n")


def test_the_image_leaves_the_report_extra_out(image: str) -> None:
    """matplotlib, rich and tqdm are not installed; `gpufleet status` says which extra it needs."""
    run = [*PODMAN, "run", "--rm", "--network", "none", *LIMITS, "--read-only", "--entrypoint"]
    missing = subprocess.run([*run, "python3", image, "-c", (
        "import importlib.util, json\n"
        "print(json.dumps([m for m in ('matplotlib', 'rich', 'tqdm', 'pytest') if importlib.util.find_spec(m)]))")],
        capture_output=True, text=True, timeout=120)
    assert missing.returncode == 0, missing.stderr
    assert json.loads(missing.stdout) == []
    cli = subprocess.run([*run, "gpufleet", image, "status"], capture_output=True, text=True, timeout=120)
    assert cli.returncode == 2, (cli.stdout, cli.stderr)
    assert "pip install 'gpufleet[report]'" in cli.stderr and "Traceback" not in cli.stderr
