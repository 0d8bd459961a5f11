#!/usr/bin/env bash
# Local real control plane for gpufleet: kube-apiserver + etcd + kube-controller-manager +
# kube-scheduler (Kubernetes 1.33) and a kwok controller, started by kwokctl's binary runtime on
# 127.0.0.1, with fake GPU nodes in two capacity classes (on-demand and spot).
#
#   hack/cluster.sh up      build binaries if missing, create the cluster, add nodes, install CRDs
#   hack/cluster.sh down    delete the cluster
#   hack/cluster.sh env     print `export KUBECONFIG=...` for the running cluster
#   hack/cluster.sh nodes   (re)apply the fake GPU nodes
#
# Settings (environment): CLUSTER_NAME (gpufleet), ONDEMAND_NODES (2), SPOT_NODES (2),
# GPUS_PER_NODE (4), GPU_PRODUCT (NVIDIA-L4), GPUFLEET_CACHE (~/.cache/gpufleet).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
CLUSTER_NAME=${CLUSTER_NAME:-gpufleet}
ONDEMAND_NODES=${ONDEMAND_NODES:-2}
SPOT_NODES=${SPOT_NODES:-2}
GPUS_PER_NODE=${GPUS_PER_NODE:-4}
GPU_PRODUCT=${GPU_PRODUCT:-NVIDIA-L4}
CACHE=${GPUFLEET_CACHE:-$HOME/.cache/gpufleet}
BIN=${GPUFLEET_BIN:-$CACHE/bin}
export KWOK_WORKDIR=${KWOK_WORKDIR:-$CACHE/kwok}
KUBECONFIG_FILE=$KWOK_WORKDIR/clusters/$CLUSTER_NAME/kubeconfig.yaml
export PATH=$BIN:$PATH

log() { printf '[cluster] %s\n' "$*" >&2; }

node_yaml() { # name class index
  local name=$1 class=$2 taints=""
  if [ "$class" = spot ]; then
    taints='  taints:
  - {key: cloud.google.com/gke-spot, value: "true", effect: NoSchedule}'
  fi
  cat <<YAML
apiVersion: v1
kind: Node
metadata:
  name: $name
  annotations: {kwok.x-k8s.io/node: fake}
  labels:
    type: kwok
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    kubernetes.io/hostname: $name
    node.kubernetes.io/instance-type: g6.12xlarge
    karpenter.sh/capacity-type: $class
    nvidia.com/gpu.product: $GPU_PRODUCT
    nvidia.com/gpu.count: "$GPUS_PER_NODE"
$( [ "$class" = spot ] && echo '    cloud.google.com/gke-spot: "true"' )
spec:
$taints
status:
  capacity: {cpu: "48", memory: 192Gi, pods: "110", nvidia.com/gpu: "$GPUS_PER_NODE"}
  allocatable: {cpu: "48", memory: 192Gi, pods: "110", nvidia.com/gpu: "$GPUS_PER_NODE"}
---
YAML
}

nodes() {
  local i
  {
    for ((i = 0; i < ONDEMAND_NODES; i++)); do node_yaml "gpu-ondemand-$i" on-demand; done
    for ((i = 0; i < SPOT_NODES; i++)); do node_yaml "gpu-spot-$i" spot; done
  } | kubectl --kubeconfig "$KUBECONFIG_FILE" apply -f - >/dev/null
  # One LIST a second until every kwok node is Ready (`kubectl wait` checks nodes one at a time,
  # ~0.2 s each: over 3 minutes for 1,000 nodes that kwok had made Ready at once).
  local not_ready deadline=$((SECONDS + 120 + (ONDEMAND_NODES + SPOT_NODES) / 10))
  while :; do
    not_ready=$(kubectl --kubeconfig "$KUBECONFIG_FILE" get node -l type=kwok -o \
      jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -cvx True || true)
    [ "$not_ready" = 0 ] && break
    if ((SECONDS > deadline)); then log "$not_ready nodes still not Ready"; exit 1; fi
    sleep 1
  done
  log "nodes: $ONDEMAND_NODES on-demand + $SPOT_NODES spot, $GPUS_PER_NODE x $GPU_PRODUCT each"
}

up() {
  "$here/build-cluster-bins.sh"
  if kwokctl get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME" \
      && kubectl --kubeconfig "$KUBECONFIG_FILE" get --raw /readyz >/dev/null 2>&1; then
    log "cluster $CLUSTER_NAME already running"
  else
    kwokctl delete cluster --name "$CLUSTER_NAME" >/dev/null 2>&1 || true
    log "creating cluster $CLUSTER_NAME (workdir $KWOK_WORKDIR)"
    # kwokctl gives each component the first port below 32767 that nothing listens on yet, so two
    # clusters created at once (parallel test workers) pick the same ports: one creation at a time.
    mkdir -p "$KWOK_WORKDIR"
    exec 9>"$KWOK_WORKDIR/.create.lock"
    flock 9
    # --kubeconfig "" keeps kwokctl from merging a context into ~/.kube/config.
    kwokctl create cluster --name "$CLUSTER_NAME" --runtime binary \
      --kube-apiserver-binary "$BIN/kube-apiserver" \
      --kube-controller-manager-binary "$BIN/kube-controller-manager" \
      --kube-scheduler-binary "$BIN/kube-scheduler" \
      --etcd-binary "$BIN/etcd" \
      --kwok-controller-binary "$BIN/kwok" \
      --config "$here/kwok/config.yaml" \
      --kubeconfig "" \
      --wait 3m >&2
    flock -u 9
  fi
  nodes
  kubectl --kubeconfig "$KUBECONFIG_FILE" apply --server-side -f "$root/crds/" >/dev/null
  kubectl --kubeconfig "$KUBECONFIG_FILE" wait --for=condition=Established crd --all --timeout=60s >/dev/null
  log "ready: export KUBECONFIG=$KUBECONFIG_FILE"
}

down() {
  kwokctl delete cluster --name "$CLUSTER_NAME" >&2 || true
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  nodes) nodes ;;
  env) echo "export KUBECONFIG=$KUBECONFIG_FILE" ;;
  kubeconfig) echo "$KUBECONFIG_FILE" ;;
  *) echo "usage: $0 up|down|nodes|env|kubeconfig" >&2; exit 2 ;;
esac
