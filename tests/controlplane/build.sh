#!/usr/bin/env bash
# Builds the local control plane from Go modules into tests/controlplane/bin:
# etcd, kube-apiserver, kube-controller-manager and kubectl from the module in
# this directory, helm from tests/tools (its own module, out of reach of the
# replace block), and the devenv launcher.
#
# A stamp of the inputs (go.mod, go.sum, sources, Go version) skips the build
# when nothing changed, so a second run costs nothing. Go's own build cache
# (GOCACHE) makes a rebuild after a small change cheap too.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tools="$here/../tools"
out="${MANIFOLD_BIN_DIR:-$here/bin}"
mkdir -p "$out"

stamp_of() {
  # $1: module dir; the rest: what the build produces
  (cd "$1" && { go version; cat go.mod go.sum; find . -name '*.go' -not -path './bin/*' | sort | xargs cat; } | sha256sum | cut -d' ' -f1)
}

build() {
  # $1: name of the stamp; $2: module dir; $3: expected binaries; rest: go build args
  local name=$1 dir=$2 bins=$3; shift 3
  local want have=""
  want="$(stamp_of "$dir")"
  [ -f "$out/.$name.stamp" ] && have="$(cat "$out/.$name.stamp")"
  local missing=0
  for b in $bins; do [ -x "$out/$b" ] || missing=1; done
  if [ "$want" = "$have" ] && [ $missing = 0 ]; then
    echo "controlplane: $name is up to date"
    return
  fi
  echo "controlplane: building $name (the first build takes several minutes)"
  (cd "$dir" && go build -trimpath "$@")
  echo "$want" > "$out/.$name.stamp"
}

build kubernetes "$here" "etcd kube-apiserver kube-controller-manager kubectl devenv" \
  -o "$out/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kubectl \
  go.etcd.io/etcd/server/v3 \
  ./devenv
# The root package of go.etcd.io/etcd/server/v3 builds as "v3".
if [ -x "$out/v3" ]; then mv -f "$out/v3" "$out/etcd"; fi

helm_version="$(cd "$tools" && go list -m -f '{{.Version}}' helm.sh/helm/v3)"
build helm "$tools" "helm" -o "$out/helm" \
  -ldflags "-X helm.sh/helm/v3/internal/version.version=$helm_version" \
  helm.sh/helm/v3/cmd/helm
