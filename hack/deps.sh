#!/usr/bin/env bash
# What the tests and the demo need outside the project venv: Debian's Prometheus, lua5.1 and jq, and the Triton
# runtime venv. Idempotent and quiet when present.
set -euo pipefail
need=()
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v lua5.1 >/dev/null 2>&1 || need+=(lua5.1)  # runs the Argo CD health check from docs/gitops.md
command -v jq >/dev/null 2>&1 || need+=(jq)          # runs the ignoreDifferences expressions from the same doc
if [ ${#need[@]} -gt 0 ]; then
  echo "[deps] apt-get install ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The real Triton server for the metric-shape tests and the demo: its own small venv (numpy<2 for the
# wheel's Python backend stub, see operator/gpufleet/devenv/triton.py). Needs the project venv first.
cd "$(dirname "$0")/.."
if [ -x .venv/bin/python ]; then
  .venv/bin/python -m gpufleet.devenv.triton >/dev/null 2>&1 || {
    echo "[deps] creating the Triton runtime venv (nvidia-pytriton, numpy<2)" >&2
    .venv/bin/python -m gpufleet.devenv.triton --ensure >/dev/null
  }
fi
