#!/usr/bin/env bash
# `make run`: the local real cluster with fake GPU nodes, the operator (out of cluster) and the
# example InferenceService. Everything runs on 127.0.0.1; Ctrl-C stops the operator, and
# `make cluster-down` removes the cluster.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
cd "$root"
export CLUSTER_NAME=${CLUSTER_NAME:-gpufleet}
"$here/cluster.sh" up
KUBECONFIG=$("$here/cluster.sh" kubeconfig)
export KUBECONFIG
mkdir -p .run
log=.run/operator.log

.venv/bin/gpufleet operator --kubeconfig "$KUBECONFIG" --health 127.0.0.1:8080 >"$log" 2>&1 &
op=$!
trap 'kill $op 2>/dev/null; wait $op 2>/dev/null; echo; echo "operator stopped; the cluster keeps running (make cluster-down)"' EXIT
kubectl apply -f examples/01-chat-triton.yaml >/dev/null

cat <<MSG

gpufleet is running against the local cluster '$CLUSTER_NAME' (operator log: $log).
In another terminal:
  export KUBECONFIG=$KUBECONFIG
  kubectl get inferenceservices -w          # desired / serving / standby / starting / reason
  kubectl get pods -L gpufleet.io/capacity-class,gpufleet.io/serving -w
  kubectl describe inferenceservice chat    # conditions, last decision, events
Stop with Ctrl-C here; remove the cluster with 'make cluster-down'.

MSG
kubectl get inferenceservices -w &
watcher=$!
trap 'kill $watcher $op 2>/dev/null; wait $op 2>/dev/null; echo; echo "operator stopped; the cluster keeps running (make cluster-down)"' EXIT
wait $op
