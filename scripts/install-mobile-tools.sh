#!/usr/bin/env bash
# Installs what the binding tests need, from package registries only:
# the Kotlin compiler (npm package kotlin-compiler), JNA (Debian libjna-java),
# a JDK (Debian), pytest (PyPI). Skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=target/tools
KOTLIN_VERSION=2.4.20

need_apt=()
command -v java >/dev/null 2>&1 || need_apt+=(default-jdk-headless)
[ -f /usr/share/java/jna.jar ] || need_apt+=(libjna-java)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]} from Debian"
  apt-get update -q && apt-get install -y -q "${need_apt[@]}"
fi
if [ ! -x "$tools/kotlin/node_modules/kotlin-compiler/bin/kotlinc" ]; then
  echo "installing kotlin-compiler@$KOTLIN_VERSION from npm"
  npm install --silent --prefix "$tools/kotlin" "kotlin-compiler@$KOTLIN_VERSION"
fi
# Debian's own Python refuses pip installs (PEP 668): fall back to its package.
python3 -m pytest --version >/dev/null 2>&1 \
  || python3 -m pip install -q pytest 2>/dev/null \
  || { apt-get update -q && apt-get install -y -q python3-pytest; }
