#!/usr/bin/env bash
# Builds the operator image from the Dockerfile with podman (daemonless, from Debian's packages).
#
#   hack/image.sh                 build $IMAGE (default: the chart's image, ghcr.io/gpufleet/gpufleet:<appVersion>)
#   hack/image.sh --report DIR    and write DIR/README.md: size, layers, largest packages, build times
#   BASE=python:3.11-slim-bookworm hack/image.sh   build on a pullable base instead
#
# Public container registries cannot be reached from these machines, so by default the base is a
# Debian bookworm root filesystem made with mmdebstrap from Debian's mirror (the same Python 3.11 as
# the Dockerfile's default base) and imported with `podman import`. The tarball is cached in
# ~/.cache/gpufleet/image/ and the imported base and the build's layers in podman's storage, so a
# warm build only redoes the layers whose inputs changed. Idempotent; installs podman, runc and
# mmdebstrap with apt-get when they are missing (CI runs as root on a possibly fresh machine).
#
# podman runs with the runc runtime (crun refuses this machine's cgroup v1 layout), host networking
# (pip reaches PyPI from the build) and an explicit nofile limit (the default one is refused).
set -euo pipefail
cd "$(dirname "$0")/.."

APP_VERSION=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/gpufleet/Chart.yaml)
IMAGE=${IMAGE:-ghcr.io/gpufleet/gpufleet:${APP_VERSION}}
CACHE=${GPUFLEET_CACHE:-$HOME/.cache/gpufleet}/image
SUITE=bookworm
# What the base holds: python3 with venv (the Dockerfile's build stage makes a venv), CA
# certificates (TLS to Prometheus is verified against the system store), and libstdc++ for the
# manylinux wheels (numpy, pandas, scipy). groupadd/useradd come with minbase's passwd.
BASE_PACKAGES=python3,python3-venv,ca-certificates,libstdc++6
# Containers get the shell's own hard limit: podman's default (1048576) is above it, and raising
# a hard limit is refused here ("error setting rlimit type 7: operation not permitted").
NOFILE=${NOFILE:-$(ulimit -Hn):$(ulimit -Hn)}
PODMAN=(podman --runtime runc)

log() { echo "[image] $*" >&2; }

REPORT=""
if [ "${1:-}" = --report ]; then REPORT=${2:?--report DIR}; fi

# --report DIR: the image's size, its layers and its largest Python packages, and this build's times
# (docs/helm.md quotes them; `make image-report` rewrites reports/image/README.md).
report() {
  mkdir -p "$REPORT"
  local steps cached base_size
  steps=$(grep -c '^\[[0-9]*/[0-9]*\] STEP' "$build_log" || true)
  cached=$(grep -c '^--> Using cache' "$build_log" || true)
  base_size=$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$BASE")
  {
    echo "# The operator image"
    echo
    echo "Written by \`hack/image.sh --report $REPORT\` (\`make image-report\`) on $(date -u +%Y-%m-%d) with $(podman --version)."
    echo
    echo "| what | value |"
    echo "|---|---|"
    echo "| image | \`$IMAGE\` |"
    echo "| size (podman image inspect, uncompressed) | $((size / 1000000)) MB |"
    echo "| base | \`$BASE\`, $((base_size / 1000000)) MB |"
    echo "| base made in this run (mmdebstrap + podman import) | $base_s s |"
    echo "| podman build in this run | $build_s s, $cached of $steps steps from the layer cache |"
    echo "| machine | $(nproc) cores |"
    echo
    echo "Layers (podman history):"
    echo
    echo "| size | created by |"
    echo "|---:|---|"
    "${PODMAN[@]}" history --no-trunc --format '{{.Size}}|{{.CreatedBy}}' "$IMAGE" \
      | sed -e 's|/bin/sh -c #(nop) ||' -e 's/\(dir\|file\):[0-9a-f]\{64\}/\1/' -e 's/ *$//' \
      | awk -F'|' '$1 != "0 B" {printf "| %s | `%s` |\n", $1, substr($2, 1, 90)}'
    echo
    echo "Largest entries of the venv's site-packages (du, kB):"
    echo
    echo "| kB | path |"
    echo "|---:|---|"
    "${PODMAN[@]}" run --rm --network none --ulimit "nofile=$NOFILE" --ulimit nproc=4096:4096 --entrypoint sh "$IMAGE" \
      -c 'du -sk /opt/gpufleet/lib/python3*/site-packages/* | sort -rn | head -15' \
      | awk '{sub(".*/site-packages/", "", $2); printf "| %s | %s |\n", $1, $2}'
  } > "$REPORT/README.md"
  log "wrote $REPORT/README.md"
}

need=()
command -v podman >/dev/null 2>&1 || need+=(podman)
command -v runc >/dev/null 2>&1 || need+=(runc)
if [ -z "${BASE:-}" ]; then command -v mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap); fi
if [ ${#need[@]} -gt 0 ]; then
  log "apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

base_s=0
if [ -z "${BASE:-}" ]; then
  # No recommends; merged /usr by symlinks (the usrmerge package would bring a full perl, 46 MB);
  # no docs, man pages or translations.
  recipe=(--variant=minbase --include="$BASE_PACKAGES" --aptopt='APT::Install-Recommends "false"'
          --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
          --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*'
          --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*')
  # The base's name carries a hash of its recipe: a changed recipe makes a new one.
  key=$(printf '%s\n' "$SUITE" "${recipe[@]}" | sha256sum | cut -c1-12)
  BASE=localhost/gpufleet-base:$SUITE-$key
  tarball=$CACHE/gpufleet-base-$SUITE-$key.tar
  if ! "${PODMAN[@]}" image exists "$BASE"; then
    base_start=$SECONDS
    if [ ! -s "$tarball" ]; then
      mkdir -p "$CACHE"
      # The machine's own apt sources when it has them (its mirror and the security suite).
      mirror=/etc/apt/sources.list.d/debian.sources
      [ -s "$mirror" ] || mirror=http://deb.debian.org/debian
      log "mmdebstrap $SUITE ($BASE_PACKAGES) -> $tarball"
      mmdebstrap --quiet "${recipe[@]}" --format=tar "$SUITE" "$tarball.tmp" "$mirror" </dev/null
      mv "$tarball.tmp" "$tarball"
    fi
    log "podman import $tarball -> $BASE"
    "${PODMAN[@]}" import --quiet --change 'CMD ["/bin/bash"]' "$tarball" "$BASE" >/dev/null
    base_s=$((SECONDS - base_start))
  fi
fi

# pip in the build trusts what the host trusts (this machine's egress re-signs TLS with its own CA):
# the host's bundle goes in as a build secret, mounted for the pip steps only.
secret=()
cert=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
[ -s "$cert" ] && secret=(--secret "id=pip-cert,src=$cert")

log "podman build --build-arg BASE=$BASE -t $IMAGE"
build_log=$(mktemp)
trap 'rm -f "$build_log"' EXIT
start=$SECONDS
"${PODMAN[@]}" build --layers --network host --ulimit "nofile=$NOFILE" "${secret[@]}" \
  --build-arg "BASE=$BASE" -t "$IMAGE" -f Dockerfile . 2>&1 | tee "$build_log" >&2
build_s=$((SECONDS - start))
size=$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$IMAGE")
log "built $IMAGE in $build_s s (base: $base_s s): $((size / 1000000)) MB"
[ -n "$REPORT" ] && report
echo "$IMAGE"
