#!/usr/bin/env bash
# A Kubernetes cluster on this machine without Docker, with the operator installed by its Helm
# chart and examples/kafkacluster.yaml applied: builds the control plane and helm once
# (scripts/k8s-tools.sh, cached under ~/.cache/oxbow), the workspace's binaries, then runs
# oxbow-kube-up, which prints how to reach the cluster. Needs root (network namespaces).
# Arguments go to oxbow-kube-up (--no-example).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/k8s-tools.sh >/dev/null
cargo build --workspace --bins
exec target/debug/oxbow-kube-up "$@"
