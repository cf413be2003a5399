#!/usr/bin/env bash
# Generates the Kotlin, Swift and Python bindings (library mode) into
# bindings-out/, then compiles and runs the Kotlin and Python scenario tests
# against a real relay. Usage: scripts/bindings.sh [generate|test]
# (default: both). Installs its tools (see scripts/install-mobile-tools.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-all}"
out=bindings-out
tools=target/tools
lib=target/debug/libfieldcrm_mobile.so

log() { printf '\n==> %s\n' "$*"; }

generate() {
  # The generator first, the library last and on its own: building them
  # together would compile uniffi's CLI into the library.
  log "building uniffi-bindgen, the library and the relay"
  cargo build -q -p fieldcrm-mobile --features cli --bin uniffi-bindgen
  cargo build -q -p fieldcrm-mobile --lib
  cargo build -q -p fieldcrm-server --bin fieldcrm-server
  rm -rf "$out"
  for lang in kotlin python swift; do
    target/debug/uniffi-bindgen generate --no-format --library "$lib" --language "$lang" --out-dir "$out/$lang"
  done
  cat mobile-bindings/glue/python_repr.py >> "$out/python/fieldcrm_mobile.py"
  cp "$lib" "$out/python/"
  log "generated: $(cd "$out" && find . -type f | sort | tr '\n' ' ')"
}

test_kotlin() {
  log "Kotlin (JVM) scenario"
  local kotlin_home="$tools/kotlin/node_modules/kotlin-compiler"
  local jna=/usr/share/java/jna.jar
  "$kotlin_home/bin/kotlinc" -nowarn \
    "$out/kotlin/uniffi/fieldcrm_mobile/fieldcrm_mobile.kt" \
    mobile-bindings/tests/kotlin/Main.kt \
    -cp "$jna" -d "$out/kotlin-test.jar"
  java -Djna.library.path=target/debug \
    -cp "$out/kotlin-test.jar:$jna:$kotlin_home/lib/kotlin-stdlib.jar" \
    MainKt target/debug/fieldcrm-server
}

test_python() {
  log "Python scenario (pytest)"
  FIELDCRM_SERVER_BIN=target/debug/fieldcrm-server PYTHONPATH="$out/python" \
    python3 -m pytest -q mobile-bindings/tests/python
}

case "$mode" in
  generate) generate ;;
  test) test_kotlin; test_python ;;
  all) scripts/install-mobile-tools.sh; generate; test_kotlin; test_python ;;
  *) echo "usage: $0 [generate|test]" >&2; exit 2 ;;
esac
