#!/usr/bin/env bash
# Build the local control plane's binaries from Go modules, once, into a cache outside the repo.
# kube-apiserver/controller-manager/scheduler (Kubernetes 1.33), etcd 3.5, kwok + kwokctl, helm.
# Each tool gets a tiny wrapper module because k8s.io/kubernetes and etcd's server module carry
# replace directives that make a plain `go install pkg@version` fail.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.33.13}
ETCD_VERSION=${ETCD_VERSION:-v3.5.24}
KWOK_VERSION=${KWOK_VERSION:-v0.7.0}
HELM_VERSION=${HELM_VERSION:-v3.18.6}
CACHE=${GPUFLEET_CACHE:-$HOME/.cache/gpufleet}
BIN=${GPUFLEET_BIN:-$CACHE/bin}
WORK=$CACHE/build
export GOTOOLCHAIN=${GOTOOLCHAIN:-local} CGO_ENABLED=0 GOFLAGS=-mod=mod

mkdir -p "$BIN" "$WORK"
log() { printf '[build-cluster-bins] %s\n' "$*" >&2; }
have() { [ -x "$BIN/$1" ] && [ -f "$BIN/.$1.version" ] && [ "$(cat "$BIN/.$1.version")" = "$2" ]; }
stamp() { echo "$2" > "$BIN/.$1.version"; }

build_k8s() {
  if have kube-apiserver "$K8S_VERSION" && have kube-controller-manager "$K8S_VERSION" && have kube-scheduler "$K8S_VERSION"; then return; fi
  local d=$WORK/k8s-$K8S_VERSION staging=v0${K8S_VERSION#v1} minor
  minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  mkdir -p "$d"
  log "kubernetes $K8S_VERSION (staging $staging) in $d"
  {
    echo "module gpufleet.local/k8sbins"
    echo
    echo "go 1.24.0"
    echo
    echo "godebug default=go1.24"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "tool ("
    for c in kube-apiserver kube-controller-manager kube-scheduler; do echo "	k8s.io/kubernetes/cmd/$c"; done
    echo ")"
    echo
    echo "replace ("
    for m in api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider \
             cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api \
             cri-client csi-translation-lib dynamic-resource-allocation endpointslice externaljwt kms \
             kube-aggregator kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics \
             mount-utils pod-security-admission sample-apiserver; do
      echo "	k8s.io/$m => k8s.io/$m $staging"
    done
    echo ")"
  } > "$d/go.mod"
  (cd "$d" && go mod tidy)
  local bd ldf="-s -w"
  bd=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldf="$ldf -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=$bd"
  done
  (cd "$d" && go build -trimpath -ldflags "$ldf" -o "$BIN/" \
     k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler)
  for c in kube-apiserver kube-controller-manager kube-scheduler; do stamp $c "$K8S_VERSION"; done
}

build_etcd() {
  if have etcd "$ETCD_VERSION"; then return; fi
  local d=$WORK/etcd-$ETCD_VERSION
  mkdir -p "$d"
  log "etcd $ETCD_VERSION"
  (cd "$d" && { [ -f go.mod ] || go mod init gpufleet.local/etcdbin; } \
     && go get -tool "go.etcd.io/etcd/server/v3@$ETCD_VERSION" \
     && go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3)
  stamp etcd "$ETCD_VERSION"
}

build_kwok() {
  if have kwok "$KWOK_VERSION" && have kwokctl "$KWOK_VERSION"; then return; fi
  log "kwok $KWOK_VERSION"
  GOBIN=$BIN go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwokctl@$KWOK_VERSION"
  stamp kwok "$KWOK_VERSION"; stamp kwokctl "$KWOK_VERSION"
}

build_helm() {
  # The k8s version ldflags set what `helm template` assumes without --kube-version (else 1.20).
  local k8s_minor stamp_value
  k8s_minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  stamp_value="$HELM_VERSION+k8s1.$k8s_minor"
  if have helm "$stamp_value"; then return; fi
  log "helm $HELM_VERSION"
  GOBIN=$BIN go install -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION \
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$k8s_minor" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  stamp helm "$stamp_value"
}

start=$(date +%s)
tools=${*:-etcd kwok helm k8s}
for t in $tools; do "build_$t"; done
log "done in $(( $(date +%s) - start ))s: $BIN"
