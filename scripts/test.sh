#!/usr/bin/env bash
# The test command: formatting, lints, build, Rust tests, then the Python example tests.
# Installs the Python packages and kcat the tests need when they are missing; builds or fetches
# the Kubernetes control plane, helm and Apache Kafka's jars into ~/.cache/oxbow once.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() {
    printf '\n==> %s\n' "$*"
}

# Cargo's output lives outside the checkout, so a fresh clone reuses what an earlier run built
# (only a fresh machine compiles everything); a CARGO_TARGET_DIR of the caller wins.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/oxbow/target}"

step "Test tools (pip: kafka-python, confluent-kafka, pytest; apt: kcat, openssl, jq, iproute2, iptables, Java, Maven, faketime)"
# pip answers "already satisfied" without going to the network when the pins hold.
python3 -m pip install --quiet --disable-pip-version-check \
    'kafka-python>=2.1' 'confluent-kafka>=2.3' 'pytest>=7.4'
# kcat drives the broker in the Python tests; openssl makes their TLS certificates and the
# Kubernetes test cluster's; jq reads Go module metadata for scripts/k8s-tools.sh; ip (iproute2)
# gives the test cluster's pods their network namespaces; iptables cuts the network between
# brokers in the partition fault test; java and mvn run Apache Kafka's tools,
# Streams and Connect in the side-by-side tests; faketime's library moves a broker's clock in
# the clock-jump test.
missing=()
for tool in kcat:kcat openssl:openssl jq:jq ip:iproute2 iptables:iptables java:openjdk-17-jdk-headless mvn:maven faketime:faketime; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    if [[ "$(id -u)" -ne 0 ]]; then
        echo "missing ${missing[*]} and this user cannot apt-get install them: install the Debian packages ${missing[*]} and rerun" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

step "cargo fmt --check (the workspace and the fuzz crate)"
cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml --all -- --check

step "cargo clippy (all targets, warnings are errors; the workspace and the fuzz crate)"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy --manifest-path fuzz/Cargo.toml --all-targets -- -D warnings

step "cargo build (binaries)"
cargo build --workspace --bins

step "Kubernetes control plane and helm for the operator tests (scripts/k8s-tools.sh: built once, cached in ~/.cache/oxbow)"
bash scripts/k8s-tools.sh

step "Apache Kafka's jars for the side-by-side tests (scripts/kafka-tools.sh: fetched once with mvn, cached in ~/.cache/oxbow)"
bash scripts/kafka-tools.sh

step "librdkafka's own test runner for its transaction tests (scripts/librdkafka-tests.sh: built once, cached in ~/.cache/oxbow)"
bash scripts/librdkafka-tests.sh

step "cargo test (the operator's Kubernetes tests each run a control plane, the node agent and real brokers)"
cargo test --workspace --no-fail-fast

step "operator: helm lint/template, manifest and CRD schema validation"
bash scripts/test-operator.sh

step "pytest: Python examples against the oxbow-broker just built"
export OXBOW_BROKER_BIN="${OXBOW_BROKER_BIN:-$CARGO_TARGET_DIR/debug/oxbow-broker}"
# The examples hard-code localhost:9092. Where we may, run them in a private network
# namespace, so a broker a developer left running on 9092 does not get in the way.
if unshare --net true 2>/dev/null && command -v ip >/dev/null 2>&1; then
    echo "(in a private network namespace)"
    unshare --net bash -c 'ip link set lo up && exec python3 -m pytest -q e2e/python'
else
    python3 -m pytest -q e2e/python
fi

step "fuzz: every cargo-fuzz target for ${OXBOW_FUZZ_SECONDS:-30} s (nightly; installs cargo-fuzz if missing)"
# Its own crate and target directory (~/.cache/oxbow/fuzz-target), so the instrumented nightly
# build leaves the workspace's alone. Any crash, panic, timeout or oversized allocation fails the command.
env -u CARGO_TARGET_DIR bash fuzz/run.sh "${OXBOW_FUZZ_SECONDS:-30}"
