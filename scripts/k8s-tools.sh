#!/usr/bin/env bash
# Builds the Kubernetes control plane the operator tests run against, and helm, from their Go
# modules at pinned releases, into a cache outside the repository. Does nothing when the
# binaries are already there. Prints the directory holding them on its last line.
#
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl  k8s.io/kubernetes
#   etcd                                                              go.etcd.io/etcd/server/v3
#   helm                                                              helm.sh/helm/v4
#
# k8s.io/kubernetes requires its staging modules (k8s.io/api, k8s.io/apiserver, ...) at
# v0.0.0 and replaces them with local paths, so `go install ...@v1.37.x` cannot build it. A
# throw-away wrapper module requires the commands and pins each of those staging modules to
# the matching v0.37.x release instead. Needs Go and jq. About 11 minutes cold on 2 cores
# (helm another 3.5), seconds when cached.
set -euo pipefail

K8S_VERSION="${OXBOW_K8S_VERSION:-v1.37.2}"
# The etcd release Kubernetes 1.37 is tested with.
ETCD_VERSION="${OXBOW_ETCD_VERSION:-v3.7.0}"
HELM_VERSION="${OXBOW_HELM_VERSION:-v4.3.2}"
CACHE="${OXBOW_CACHE:-$HOME/.cache/oxbow}"
OUT="$CACHE/k8s/$K8S_VERSION"
COMMANDS=(kube-apiserver kube-controller-manager kube-scheduler kubectl)

have_all() {
    for binary in "${COMMANDS[@]}" etcd helm; do
        [[ -x "$OUT/$binary" ]] || return 1
    done
}

if have_all; then
    echo "$OUT"
    exit 0
fi

for tool in go jq; do
    command -v "$tool" >/dev/null 2>&1 || { echo "k8s-tools: $tool is needed to build the control plane" >&2; exit 1; }
done

export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod
mkdir -p "$OUT"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

build_kubernetes() {
    local wrapper="$scratch/kubernetes" gomod minor ldflags package
    mkdir -p "$wrapper"
    cd "$wrapper"
    go mod init oxbow.invalid/k8s-tools >/dev/null 2>&1
    gomod="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | jq -r .GoMod)"
    # GODEBUG defaults come from the main module's go and godebug lines: take Kubernetes' own.
    go mod edit -go="$(go mod edit -json "$gomod" | jq -r .Go)"
    while read -r setting; do
        [[ -n "$setting" ]] && go mod edit -godebug="$setting"
    done < <(go mod edit -json "$gomod" | jq -r '.Godebug[]? | "\(.Key)=\(.Value)"')
    while read -r module; do
        go mod edit -replace="$module=$module@v0.${K8S_VERSION#v1.}"
    done < <(go mod edit -json "$gomod" | jq -r '.Require[] | select(.Version == "v0.0.0") | .Path')
    for command in "${COMMANDS[@]}"; do
        go get -tool "k8s.io/kubernetes/cmd/$command@$K8S_VERSION"
    done
    minor="$(cut -d. -f2 <<<"$K8S_VERSION")"
    ldflags="-s -w"
    for package in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldflags+=" -X $package.gitVersion=$K8S_VERSION -X $package.gitMajor=1 -X $package.gitMinor=$minor"
        ldflags+=" -X $package.gitTreeState=clean"
    done
    for command in "${COMMANDS[@]}"; do
        [[ -x "$OUT/$command" ]] && continue
        echo "k8s-tools: building $command $K8S_VERSION" >&2
        go build -trimpath -tags=selinux,notest,grpcnotrace -ldflags="$ldflags" \
            -o "$OUT/$command.partial" "k8s.io/kubernetes/cmd/$command"
        mv "$OUT/$command.partial" "$OUT/$command"
    done
}

build_etcd() {
    local module="$scratch/etcd"
    [[ -x "$OUT/etcd" ]] && return
    echo "k8s-tools: building etcd $ETCD_VERSION" >&2
    mkdir -p "$module"
    cd "$module"
    go mod init oxbow.invalid/etcd >/dev/null 2>&1
    go get -tool "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
    go build -trimpath -ldflags="-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$ETCD_VERSION" \
        -o "$OUT/etcd.partial" go.etcd.io/etcd/server/v3
    mv "$OUT/etcd.partial" "$OUT/etcd"
}

build_helm() {
    [[ -x "$OUT/helm" ]] && return
    echo "k8s-tools: building helm $HELM_VERSION" >&2
    GOBIN="$scratch/helm-bin" go install -trimpath -ldflags="-s -w" "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"
    mv "$scratch/helm-bin/helm" "$OUT/helm"
}

build_kubernetes
build_etcd
build_helm
have_all || { echo "k8s-tools: a binary is missing from $OUT after the build" >&2; exit 1; }
echo "$OUT"
