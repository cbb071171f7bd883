#!/usr/bin/env bash
# Operator manifests: the Helm chart lints and renders, the rendered objects, the CRDs and the
# objects the operator builds for each examples/kafkacluster*.yaml validate against the
# Kubernetes schemas, and the custom resources in examples/ validate against the CRDs.
#
# Installs what it needs when missing: helm (scripts/k8s-tools.sh builds it from its Go module)
# and kubernetes-validate, jsonschema and PyYAML (pip). Needs crdgen in $CARGO_TARGET_DIR (or
# target/)/debug: scripts/test.sh builds it with the workspace.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The oldest Kubernetes the operator supports (k8s-openapi's pinned feature, Chart kubeVersion).
KUBERNETES_VERSION=1.32.0

step() {
    printf '\n==> %s\n' "$*"
}

step "Operator test tools (pip: kubernetes-validate, jsonschema, PyYAML; helm from scripts/k8s-tools.sh)"
python3 -m pip install --quiet --disable-pip-version-check \
    'kubernetes-validate>=1.32' 'jsonschema>=4' 'PyYAML>=6'
# helm is built from its own Go module with the control plane (cached; see k8s-tools.sh).
k8s_tools="$(bash scripts/k8s-tools.sh | tail -n 1)"
export PATH="$k8s_tools:$PATH"
helm version --short

CRDGEN="${CRDGEN:-${CARGO_TARGET_DIR:-target}/debug/crdgen}"
if [[ ! -x "$CRDGEN" ]]; then
    echo "$CRDGEN is missing: run 'cargo build -p oxbow-operator --bins' first" >&2
    exit 1
fi

step "CRDs are generated from the Rust types and the chart ships the same files"
generated="$(mktemp -d)"
"$CRDGEN" --stdout > "$generated/crds.yaml"
for file in crds/*.yaml; do
    cmp -s "$file" "charts/oxbow/crds/$(basename "$file")" \
        || { echo "charts/oxbow/crds/$(basename "$file") differs from $file: run 'cargo run -p oxbow-operator --bin crdgen'" >&2; exit 1; }
done
expected="$(for file in crds/kafkacluster.yaml crds/kafkatopic.yaml crds/kafkauser.yaml crds/kafkarebalance.yaml; do printf -- '---\n'; cat "$file"; done)"
if [[ "$(cat "$generated/crds.yaml")" != "$expected" ]]; then
    echo "crds/ is stale: run 'cargo run -p oxbow-operator --bin crdgen'" >&2
    exit 1
fi
echo "crds/ and charts/oxbow/crds/ match"

step "helm lint"
helm lint --strict charts/oxbow
helm lint --strict charts/oxbow \
    --set 'watchNamespaces={team-a,team-b}' \
    --set metrics.serviceMonitor.enabled=true \
    --set grafanaDashboard.enabled=true

step "helm template, validated against Kubernetes $KUBERNETES_VERSION (strict)"
rendered="$generated/rendered"
mkdir -p "$rendered"
helm template oxbow charts/oxbow --namespace oxbow-system --include-crds \
    > "$rendered/default.yaml"
helm template oxbow charts/oxbow --namespace oxbow-system \
    --set 'watchNamespaces={team-a,team-b}' --set grafanaDashboard.enabled=true \
    --set replicaCount=2 > "$rendered/namespaced.yaml"
# The ServiceMonitor's schema belongs to prometheus-operator, not Kubernetes: render it
# separately and check that it renders.
helm template oxbow charts/oxbow --namespace oxbow-system \
    --set metrics.serviceMonitor.enabled=true --show-only templates/servicemonitor.yaml \
    | grep -q '^kind: ServiceMonitor$'
kubernetes-validate --strict --quiet -k "$KUBERNETES_VERSION" \
    "$rendered/default.yaml" "$rendered/namespaced.yaml" crds/*.yaml
echo "rendered chart and CRDs are valid"

step "objects the operator builds for examples/kafkacluster*.yaml (strict)"
for example in examples/kafkacluster*.yaml; do
    objects="$rendered/$(basename "$example" .yaml)-objects.yaml"
    "$CRDGEN" --cluster "$example" > "$objects"
    kubernetes-validate --strict --quiet -k "$KUBERNETES_VERSION" "$objects"
    echo "$example: $(grep -c '^kind: ' "$objects") objects valid ($(grep '^kind: ' "$objects" | cut -d' ' -f2 | sort -u | paste -sd, -))"
done

step "examples/ custom resources against the CRDs' openAPIV3Schema"
python3 e2e/validate_examples.py .

step "e2e/kind/run.sh is valid shell"
bash -n e2e/kind/run.sh
rm -rf "$generated"
