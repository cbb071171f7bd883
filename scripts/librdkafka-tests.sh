#!/usr/bin/env bash
# Builds librdkafka's own test runner (tests/test-runner) from the librdkafka source that the
# workspace's rdkafka-sys crate vendors, out of tree in a cache outside the repository, with the
# Java helper its tests start (TransactionProducerCli, compiled against Apache Kafka's
# kafka-clients jar from scripts/kafka-tools.sh). Does nothing when the cache is complete.
# Prints the runner's directory (the librdkafka tests/ directory) on its last line.
#
# The runner needs KAFKA_PATH to start its Java helper: it runs `make -s java`, then
# `java/run-class.sh <class>`, which calls `$KAFKA_PATH/bin/kafka-run-class.sh`. The cache holds
# a small KAFKA_PATH of that shape (kafka-path/: bin/kafka-run-class.sh, libs/ → Kafka's jars),
# so no Kafka distribution tarball is needed.
#
# Installs its Debian prerequisites (a C/C++ toolchain, make, python3 for the linker script,
# rapidjson-dev for the C++ tests' JSON checks) when they are missing and this user is root.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

CACHE="${OXBOW_CACHE:-$HOME/.cache/oxbow}"
CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}"

# The librdkafka version is the part after '+' in rdkafka-sys's version (4.10.0+2.12.1).
sys_version="$(awk '/^name = "rdkafka-sys"$/ { getline; gsub(/"/, "", $3); print $3 }' Cargo.lock)"
[[ -n "$sys_version" ]] || { echo "librdkafka-tests: rdkafka-sys is not in Cargo.lock" >&2; exit 1; }
version="${sys_version#*+}"
OUT="$CACHE/librdkafka-$version"
TESTS="$OUT/tests"
# Test 0129 creates its topic with segment.bytes=20000 (one aborted batch or two per segment, so
# that a fetch returns aborted records only). Kafka 4.0 raised that setting's minimum to 1 MiB
# (KIP-1030) and added the test-only topic setting internal.segment.bytes, which takes precedence
# and has no minimum; the runner is built with the test asking for the same small segments
# under that name, as a Kafka 4.x broker accepts it.
SMALL_SEGMENTS_BEFORE_KAFKA_4='"segment.bytes", "20000"'
SMALL_SEGMENTS_KAFKA_4='"internal.segment.bytes", "20000"'

complete() {
    [[ -f "$OUT/.complete" && -x "$TESTS/test-runner" ]] || return 1
    [[ -f "$TESTS/java/TransactionProducerCli.class" && -x "$OUT/kafka-path/bin/kafka-run-class.sh" ]] || return 1
    grep -q "$SMALL_SEGMENTS_KAFKA_4" "$TESTS/0129-fetch_aborted_msgs.c" || return 1
    compgen -G "$OUT/kafka-path/libs/kafka-clients-*.jar" >/dev/null
}

if complete; then
    echo "$TESTS"
    exit 0
fi

missing=()
for tool in cc:gcc c++:g++ make:make python3:python3 javac:openjdk-17-jdk-headless; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
done
[[ -f /usr/include/rapidjson/schema.h ]] || missing+=(rapidjson-dev)
if [[ ${#missing[@]} -gt 0 ]]; then
    if [[ "$(id -u)" -ne 0 ]]; then
        echo "librdkafka-tests: missing ${missing[*]} and this user cannot apt-get install them: install the Debian packages ${missing[*]} and rerun" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

source_dir() {
    compgen -G "$CARGO_HOME/registry/src/*/rdkafka-sys-$sys_version/librdkafka/tests/test.c" | head -n 1
}
if [[ -z "$(source_dir)" ]]; then
    cargo fetch --quiet
fi
test_c="$(source_dir)"
[[ -n "$test_c" ]] || {
    echo "librdkafka-tests: no rdkafka-sys-$sys_version source under $CARGO_HOME/registry/src" >&2
    exit 1
}
src="$(dirname "$(dirname "$test_c")")"

kafka="$(bash scripts/kafka-tools.sh | tail -n 1)"

echo "librdkafka-tests: building librdkafka $version's test runner from $src into $OUT" >&2
staging="$OUT.partial"
rm -rf "$staging"
mkdir -p "$(dirname "$OUT")"
cp -a "$src" "$staging"
chmod -R u+w "$staging"
sed -i "s/$SMALL_SEGMENTS_BEFORE_KAFKA_4/$SMALL_SEGMENTS_KAFKA_4/" "$staging/tests/0129-fetch_aborted_msgs.c"
grep -q "$SMALL_SEGMENTS_KAFKA_4" "$staging/tests/0129-fetch_aborted_msgs.c" || {
    echo "librdkafka-tests: test 0129 no longer asks for segment.bytes=20000; revisit its Kafka 4 spelling" >&2
    exit 1
}
log="$staging/build.log"
jobs="$(nproc 2>/dev/null || echo 2)"
# Only what the tests use: no TLS, SASL, zstd, zlib or HTTP (LZ4 is built in).
if ! (
    cd "$staging" &&
        ./configure --disable-ssl --disable-gssapi --disable-zstd --disable-zlib --disable-curl \
            --disable-lz4-ext &&
        make -j"$jobs" libs &&
        make -j"$jobs" -C tests test-runner
) >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "librdkafka-tests: the build failed (log: $log)" >&2
    exit 1
fi
grep -q '^#define WITH_RAPIDJSON 1' "$staging/config.h" || {
    echo "librdkafka-tests: configure did not find rapidjson, so the C++ transaction test would skip itself" >&2
    exit 1
}

# KAFKA_PATH for the runner's Java helper: Kafka's jars and a kafka-run-class.sh that puts them
# (and the classes in $CLASSPATH, which java/run-class.sh sets) on the class path.
mkdir -p "$staging/kafka-path/bin"
ln -sfn "$kafka" "$staging/kafka-path/libs"
cat >"$staging/kafka-path/bin/kafka-run-class.sh" <<'EOF'
#!/usr/bin/env bash
# kafka-run-class.sh's contract for librdkafka's test helpers: run a class with Kafka's jars.
set -euo pipefail
libs="$(cd "$(dirname "${BASH_SOURCE[0]}")/../libs" && pwd -P)"
# A short-lived client: a small heap and a JIT that starts fast (0098 starts it ~20 times).
exec java -Xms32m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    -Dlog4j2.configurationFile="$libs/log4j2-tools.properties" \
    -cp "${CLASSPATH:+$CLASSPATH:}$libs/*" "$@"
EOF
chmod +x "$staging/kafka-path/bin/kafka-run-class.sh"
if ! KAFKA_PATH="$staging/kafka-path" make -s -C "$staging/tests/java" >>"$log" 2>&1; then
    tail -n 20 "$log" >&2
    echo "librdkafka-tests: compiling the Java helpers failed (log: $log)" >&2
    exit 1
fi

rm -rf "$OUT"
mv "$staging" "$OUT"
# The symlink and the script name the staging directory nowhere, so the move keeps them valid.
date -u +%Y-%m-%dT%H:%M:%SZ >"$OUT/.complete"
complete || { echo "librdkafka-tests: the build finished but $TESTS is incomplete" >&2; exit 1; }
echo "$TESTS"
