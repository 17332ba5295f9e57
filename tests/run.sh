#!/usr/bin/env bash
# Installs everything the tests need, then runs the linters and the whole suite.
# Usage: bash tests/run.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  # Debian packages the integration tests run for real (none is a build dependency).
  need=()
  for pkg in ca-certificates openssl systemd; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
  if [ "${#need[@]}" -gt 0 ]; then
    echo "== installing Debian packages: ${need[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -q \
      --no-install-recommends "${need[@]}"
  fi
fi

echo "== installing forewarn with its test dependencies"
python3 -m pip install -q --disable-pip-version-check -e '.[test]'

echo "== ruff"
python3 -m ruff check .
echo "== mypy"
python3 -m mypy
echo "== pytest"
python3 -m pytest "$@"
