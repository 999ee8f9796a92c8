#!/usr/bin/env bash
# Builds the local control plane from Go modules into tests/controlplane/bin:
# etcd, kube-apiserver, kube-controller-manager and kubectl from the module in
# this directory; for hack/cluster's node, kubelet, kube-scheduler and
# kube-proxy from the same module, and containerd v2 (containerd, ctr,
# containerd-shim-runc-v2) from tests/node (its own module); helm from tests/tools (its own module, out of reach of the
# replace block), hclcheck from tests/hclcheck (HashiCorp's HCL, for the
# steampipe config tests), and the devenv launcher.
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
  (cd "$1" && { go version; cat go.mod go.sum "$here/build.sh"; find . -name '*.go' -not -path './bin/*' | sort | xargs cat; } | sha256sum | cut -d' ' -f1)
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
  # The root package of go.etcd.io/etcd/server/v3 builds as "server".
  if [ -x "$out/server" ]; then mv -f "$out/server" "$out/etcd"; fi
  echo "$want" > "$out/.$name.stamp"
}

# Without these, every component reports v0.0.0-master, which kubectl's
# version skew check and Helm's kubeVersion constraints cannot parse.
k8s_version="$(cd "$here" && go list -m -f '{{.Version}}' k8s.io/kubernetes)"
k8s_minor="$(echo "$k8s_version" | cut -d. -f2)"
k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags="$k8s_ldflags -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor -X $pkg.gitTreeState=clean"
done
build kubernetes "$here" "etcd kube-apiserver kube-controller-manager kubectl devenv" \
  -o "$out/" -ldflags "$k8s_ldflags" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kubectl \
  go.etcd.io/etcd/server/v3 \
  ./devenv

# The node (hack/cluster): the same module and version flags. A stamp of its
# own, so that the control plane's binaries need not be relinked with it.
build node "$here" "kubelet kube-scheduler kube-proxy" \
  -o "$out/" -ldflags "$k8s_ldflags" \
  k8s.io/kubernetes/cmd/kubelet \
  k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kube-proxy

# containerd v2, from Go modules rather than Debian 12's 1.6.20: 1.6 is out
# of upstream support, and lacks CRI calls the kubelet now prefers (it still
# falls back, e.g. for RuntimeConfig, but with warnings; 1.6 was not tried).
# Static (no cgo), so no btrfs or devmapper snapshotters: the node uses
# overlayfs.
containerd_version="$(cd "$here/../node" && go list -m -f '{{.Version}}' github.com/containerd/containerd/v2)"
CGO_ENABLED=0 build containerd "$here/../node" "containerd ctr containerd-shim-runc-v2" \
  -o "$out/" -tags "no_btrfs no_devmapper no_zfs urfave_cli_no_docs" \
  -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=$containerd_version" \
  github.com/containerd/containerd/v2/cmd/containerd \
  github.com/containerd/containerd/v2/cmd/ctr \
  github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2

build hclcheck "$here/../hclcheck" "hclcheck" -o "$out/hclcheck" -ldflags "-s -w" .

helm_version="$(cd "$tools" && go list -m -f '{{.Version}}' helm.sh/helm/v3)"
build helm "$tools" "helm" -o "$out/helm" \
  -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version" \
  helm.sh/helm/v3/cmd/helm
