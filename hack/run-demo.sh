#!/usr/bin/env bash
# `make run`: the local real cluster with fake GPU nodes, Debian's Prometheus, the per-pod Triton
# metrics emulator replaying a compressed day of ServeGen load, the operator (out of cluster) and
# the example InferenceService. Everything listens on 127.0.0.1. Ctrl-C stops the processes;
# `make cluster-down` removes the cluster.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
cd "$root"
export CLUSTER_NAME=${CLUSTER_NAME:-gpufleet}
PROM_PORT=${PROM_PORT:-9090}
EMU_PORT=${EMU_PORT:-9400}
SPEEDUP=${SPEEDUP:-60}     # one day of load in 24 minutes
PEAK_RPS=${PEAK_RPS:-900}  # the trace's peak, scaled to ~8 replicas of the emulated model
"$here/cluster.sh" up
KUBECONFIG=$("$here/cluster.sh" kubeconfig)
export KUBECONFIG
run=$root/.run
mkdir -p "$run/file_sd"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo; echo "stopped; the cluster keeps running (make cluster-down removes it)"
}
trap cleanup EXIT

.venv/bin/python -m gpufleet.devenv.prometheus --port "$PROM_PORT" --file-sd "$run/file_sd" \
  --scrape-interval 2 --data "$run/prometheus" >"$run/prometheus.log" 2>&1 &
pids+=($!)
.venv/bin/python -m gpufleet.emulator --kubeconfig "$KUBECONFIG" --port "$EMU_PORT" --file-sd "$run/file_sd" \
  --load "default/chat=trace:examples/load/servegen-m-small-day2.csv:$SPEEDUP:$PEAK_RPS" >"$run/emulator.log" 2>&1 &
pids+=($!)
.venv/bin/gpufleet operator --kubeconfig "$KUBECONFIG" --health 127.0.0.1:8080 \
  --prometheus-url "http://127.0.0.1:$PROM_PORT" --status-heartbeat 5 >"$run/operator.log" 2>&1 &
pids+=($!)
kubectl apply -f examples/01-chat-triton.yaml >/dev/null

cat <<MSG

gpufleet demo: cluster '$CLUSTER_NAME', Prometheus http://127.0.0.1:$PROM_PORT, emulated Triton pods
replaying one day of ServeGen m-small load ${SPEEDUP}x faster (peak $PEAK_RPS req/s). Logs in .run/.
In another terminal:
  export KUBECONFIG=$KUBECONFIG
  kubectl get inferenceservices -w            # desired / serving / standby / starting / reason
  kubectl get pods -L gpufleet.io/capacity-class,gpufleet.io/serving -w
  kubectl describe inferenceservice chat      # conditions, observed metrics, last decision, events
Ctrl-C stops the demo; 'make cluster-down' removes the cluster.

MSG
kubectl get inferenceservices -w &
pids+=($!)
wait "${pids[2]}"
