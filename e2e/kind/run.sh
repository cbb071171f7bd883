#!/usr/bin/env bash
# The Kubernetes scenario on a throwaway kind cluster, end to end:
#   create the cluster; build both images and load them; helm install the operator; apply
#   examples/kafkacluster.yaml and a KafkaTopic; wait for Ready; produce and consume with kcat
#   from a pod; scale the cluster to 4 brokers; delete a broker pod and wait for recovery;
#   delete the KafkaTopic and check the topic is gone; tear everything down.
#
# Needs docker (with a running daemon), kind, kubectl and helm. Without docker or kind it
# prints "skipped" and exits 0. KEEP_CLUSTER=1 leaves the kind cluster up for inspection.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export PATH="$PWD/.tools/bin:$PATH"

CLUSTER="${KIND_CLUSTER:-oxbow-e2e}"
NAMESPACE=oxbow-e2e
TAG="${IMAGE_TAG:-e2e}"
TIMEOUT="${TIMEOUT:-600s}"

skip() {
    echo "skipped: $* (the kind scenario needs docker with a running daemon, kind, kubectl and helm)"
    exit 0
}
command -v docker >/dev/null 2>&1 || skip "docker not available"
docker info >/dev/null 2>&1 || skip "docker not available (no daemon)"
command -v kind >/dev/null 2>&1 || skip "kind not available"
command -v kubectl >/dev/null 2>&1 || skip "kubectl not available"
command -v helm >/dev/null 2>&1 || skip "helm not available (scripts/test-operator.sh installs it in .tools/bin)"

step() {
    printf '\n==> %s\n' "$*"
}

cleanup() {
    local status=$?
    if [[ $status -ne 0 ]]; then
        echo "--- failed; state of the cluster ---"
        kubectl get kafkaclusters,kafkatopics,statefulsets,pods -A -o wide || true
        kubectl -n oxbow-system logs deploy/oxbow --tail=100 || true
        kubectl -n "$NAMESPACE" describe kafkacluster main || true
    fi
    if [[ "${KEEP_CLUSTER:-0}" != 1 ]]; then
        kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
    fi
    exit $status
}
trap cleanup EXIT

# Runs kcat in a throwaway pod inside the cluster.
kcat_pod() {
    kubectl -n "$NAMESPACE" run "kcat-$RANDOM" --rm -i --restart=Never --quiet \
        --image=edenhill/kcat:1.7.1 -- "$@"
}

wait_ready() {
    kubectl -n "$NAMESPACE" wait --for=condition=Ready --timeout="$TIMEOUT" "$@"
}

step "kind cluster $CLUSTER"
kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
kind create cluster --name "$CLUSTER" --image "${KIND_NODE_IMAGE:-kindest/node:v1.33.1}" --wait 120s

step "images oxbow-broker:$TAG and oxbow-operator:$TAG"
docker build --target broker -t "oxbow-broker:$TAG" .
docker build --target operator -t "oxbow-operator:$TAG" .
kind load docker-image --name "$CLUSTER" "oxbow-broker:$TAG" "oxbow-operator:$TAG"

step "helm install the operator"
helm install oxbow charts/oxbow --namespace oxbow-system --create-namespace --wait \
    --set image.tag="$TAG" --set image.pullPolicy=Never \
    --set brokerImage.tag="$TAG" --set logFormat=text --set logLevel=debug
kubectl get crd kafkaclusters.oxbow.dev kafkatopics.oxbow.dev

step "a 3-broker KafkaCluster"
kubectl create namespace "$NAMESPACE"
# kind has one node and no zones: the example without its rack spread and resource requests
# (portable awk: drop each of those keys with its indented block).
awk '/^  (rack|resources):/ {skip = 1; next} skip && /^    / {next} {skip = 0; print}' \
    examples/kafkacluster.yaml | kubectl -n "$NAMESPACE" apply -f -
wait_ready kafkacluster/main
kubectl -n "$NAMESPACE" get kafkacluster main
BOOTSTRAP="$(kubectl -n "$NAMESPACE" get kafkacluster main -o jsonpath='{.status.bootstrap}')"
echo "bootstrap: $BOOTSTRAP"

step "a KafkaTopic"
kubectl -n "$NAMESPACE" apply -f examples/kafkatopic-orders.yaml
wait_ready kafkatopic/orders
kubectl -n "$NAMESPACE" get kafkatopic orders

step "produce and consume from inside the cluster"
printf 'k1:hello\nk2:oxbow\nk3:kubernetes\n' | kcat_pod -P -b "$BOOTSTRAP" -t orders -K:
consumed="$(kcat_pod -C -b "$BOOTSTRAP" -t orders -o beginning -e -q -f '%k:%s\n' | sort)"
echo "$consumed"
[[ "$consumed" == "$(printf 'k1:hello\nk2:oxbow\nk3:kubernetes')" ]] \
    || { echo "consumed records differ from those produced" >&2; exit 1; }

step "scale to 4 brokers"
kubectl -n "$NAMESPACE" patch kafkacluster main --type merge -p '{"spec":{"replicas":4}}'
kubectl -n "$NAMESPACE" wait --for=jsonpath='{.status.readyBrokers}'=4 --timeout="$TIMEOUT" kafkacluster/main
wait_ready kafkacluster/main

step "delete a broker pod and wait for it to come back"
kubectl -n "$NAMESPACE" delete pod main-1 --wait=false
kubectl -n "$NAMESPACE" wait --for=jsonpath='{.status.readyBrokers}'=3 --timeout=60s kafkacluster/main || true
wait_ready pod/main-1
wait_ready kafkacluster/main
consumed_again="$(kcat_pod -C -b "$BOOTSTRAP" -t orders -o beginning -e -q -f '%k:%s\n' | sort)"
[[ "$consumed_again" == "$consumed" ]] || { echo "records lost after the pod restart" >&2; exit 1; }

step "delete the KafkaTopic: the topic goes with it"
kubectl -n "$NAMESPACE" delete kafkatopic orders --timeout=120s
# List every topic: asking for "orders" by name would create it again (auto-create is on).
if kcat_pod -L -b "$BOOTSTRAP" | grep -q 'topic "orders" with'; then
    echo "topic orders still exists" >&2
    exit 1
fi

step "passed"
echo "kind scenario passed"
