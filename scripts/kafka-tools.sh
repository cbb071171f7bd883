#!/usr/bin/env bash
# Fetches Apache Kafka's broker, CLI tools, Streams and Connect jars from Maven Central with
# `mvn`, into a cache outside the repository, for the tests that run Kafka's own tools against
# Oxbow and against a real Kafka broker side by side. Does nothing when the jars are there.
# Prints the directory holding them on its last line (every jar of it goes on the classpath).
#
# Kafka's release tarball adds a slf4j → log4j2 binding that its pom does not name; without it
# the tools and the broker log nothing, so it is fetched beside them. slf4j-api is pinned at
# depth 1 so that Connect's Jetty (slf4j 2) does not win Maven's nearest-wins choice.
set -euo pipefail

KAFKA_VERSION="${OXBOW_KAFKA_VERSION:-4.1.1}"
LOG4J_VERSION="${OXBOW_LOG4J_VERSION:-2.24.3}"
SLF4J_VERSION="${OXBOW_SLF4J_VERSION:-1.7.36}"
CACHE="${OXBOW_CACHE:-$HOME/.cache/oxbow}"
OUT="$CACHE/kafka/$KAFKA_VERSION"
KAFKA_ARTIFACTS=(kafka_2.13 kafka-tools kafka-streams connect-runtime connect-file connect-json)

complete() {
    [[ -f "$OUT/.complete" ]] || return 1
    for artifact in "${KAFKA_ARTIFACTS[@]}" kafka-clients; do
        [[ -f "$OUT/$artifact-$KAFKA_VERSION.jar" ]] || return 1
    done
    compgen -G "$OUT/log4j-slf4j-impl-*.jar" >/dev/null
}

if complete; then
    echo "$OUT"
    exit 0
fi

command -v mvn >/dev/null 2>&1 || { echo "kafka-tools: mvn is needed to fetch Kafka's jars" >&2; exit 1; }
command -v java >/dev/null 2>&1 || { echo "kafka-tools: java is needed to run Kafka's tools" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
dependency() {
    printf '    <dependency><groupId>%s</groupId><artifactId>%s</artifactId><version>%s</version></dependency>\n' "$@"
}
{
    cat <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.oxbow.tests</groupId>
  <artifactId>kafka-tools</artifactId>
  <version>$KAFKA_VERSION</version>
  <packaging>pom</packaging>
  <dependencies>
EOF
    dependency org.slf4j slf4j-api "$SLF4J_VERSION"
    for artifact in "${KAFKA_ARTIFACTS[@]}"; do
        dependency org.apache.kafka "$artifact" "$KAFKA_VERSION"
    done
    for artifact in log4j-api log4j-core log4j-slf4j-impl log4j-1.2-api; do
        dependency org.apache.logging.log4j "$artifact" "$LOG4J_VERSION"
    done
    cat <<EOF
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>3.8.1</version>
      </plugin>
    </plugins>
  </build>
</project>
EOF
} >"$work/pom.xml"

echo "kafka-tools: fetching Apache Kafka $KAFKA_VERSION's jars from Maven Central into $OUT" >&2
staging="$OUT.partial"
rm -rf "$staging"
if ! mvn -B -q -f "$work/pom.xml" dependency:copy-dependencies -DoutputDirectory="$staging" \
    >"$work/mvn.log" 2>&1; then
    tail -n 40 "$work/mvn.log" >&2
    echo "kafka-tools: mvn failed" >&2
    rm -rf "$staging"
    exit 1
fi
# Log4j2 configurations for the broker (to its log file) and for the tools (warnings to stderr,
# so a tool's stdout is only its output).
cat >"$staging/log4j2-tools.properties" <<'EOF'
status = error
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.err.ref = STDERR
EOF
cat >"$staging/log4j2-server.properties" <<'EOF'
status = error
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = info
logger.apache.name = org.apache.kafka
logger.apache.level = info
EOF
rm -rf "$OUT"
mkdir -p "$(dirname "$OUT")"
mv "$staging" "$OUT"
date -u +%Y-%m-%dT%H:%M:%SZ >"$OUT/.complete"
complete || { echo "kafka-tools: mvn finished but jars are missing in $OUT" >&2; exit 1; }
echo "$OUT"
