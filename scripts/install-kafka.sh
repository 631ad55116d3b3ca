#!/usr/bin/env bash
# Installs the Apache Kafka broker the tests and benchmarks start (idempotent, cached).
#
# The broker is the `org.apache.kafka:kafka_2.13` artifact from Maven Central with its runtime
# dependencies, copied by Maven into ${LAKEBED_CACHE:-~/.cache/lakebed}/kafka-<version>/libs.
# A marker file is written last, so an interrupted run is redone and a finished one is instant.
# Java and Maven come from Debian packages when missing. Nothing else is downloaded.
set -euo pipefail

KAFKA_VERSION="${KAFKA_VERSION:-4.1.1}"
CACHE="${LAKEBED_CACHE:-$HOME/.cache/lakebed}"
HOME_DIR="$CACHE/kafka-$KAFKA_VERSION"
LIBS="$HOME_DIR/libs"
MARKER="$HOME_DIR/.complete"

if [ -f "$MARKER" ]; then
    echo "Kafka $KAFKA_VERSION: $LIBS"
    exit 0
fi

missing=()
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing ${missing[*]} from Debian packages..."
    export DEBIAN_FRONTEND=noninteractive
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

echo "resolving Apache Kafka $KAFKA_VERSION from Maven Central..."
BUILD="$HOME_DIR/build"
rm -rf "$LIBS" "$BUILD"
mkdir -p "$BUILD"
# The broker jar logs through slf4j 1.7 without a binding: Kafka's own distribution adds
# log4j2 with its slf4j 1.x binding, as here (the harness writes a log4j2 properties file).
cat >"$BUILD/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.lakebed</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>2.24.3</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>2.24.3</version>
    </dependency>
  </dependencies>
</project>
EOF
if ! mvn -B -Dstyle.color=never -f "$BUILD/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$LIBS" >"$BUILD/mvn.log" 2>&1; then
    tail -40 "$BUILD/mvn.log" >&2
    echo "resolving org.apache.kafka:kafka_2.13:$KAFKA_VERSION failed (log: $BUILD/mvn.log)" >&2
    exit 1
fi
rm -rf "$BUILD"
touch "$MARKER"
echo "Kafka $KAFKA_VERSION: $LIBS"
