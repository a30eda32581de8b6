#!/usr/bin/env bash
# Compile android_demo/core and its JUnit 4 tests with plain kotlinc (no Gradle, no
# Android SDK) and run them. Needs: Java 17, `npm install` in android_demo/ (kotlinc
# 2.4.20), Debian's junit4 package. Last line: "N passed, N failed".
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
demo="$(dirname "$here")"
kotlinc="$demo/node_modules/kotlin-compiler/bin/kotlinc"
junit="${JUNIT_JAR:-/usr/share/java/junit4.jar}"
hamcrest="${HAMCREST_JAR:-/usr/share/java/hamcrest-core.jar}"
for need in "$kotlinc" "$junit" "$hamcrest"; do
  [ -e "$need" ] || { echo "missing $need: run 'make install' (npm install in android_demo/, apt-get install junit4)" >&2; exit 2; }
done
out="$here/build"
mkdir -p "$out"
"$kotlinc" -nowarn "$here/src/main/kotlin" "$here/src/test/kotlin" -cp "$junit:$hamcrest" \
  -include-runtime -d "$out/core-tests.jar" 2>&1 | grep -v "^warning" || true
java -Dgemmaedge.vectors="$demo/test_vectors" -cp "$out/core-tests.jar:$junit:$hamcrest" \
  dev.gemmaedge.core.RunAllTestsKt
