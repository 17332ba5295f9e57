#!/usr/bin/env bash
# Installs everything the tests need, then runs the linters and the whole suite.
# Usage: bash tests/run.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the integration tests run for real: the Nagios plugins (command probe),
# node_exporter and Prometheus (scrape and promql probes), Alertmanager (its webhook into
# forewarn, amtool), smartctl, ping, systemd-analyze, chrony (clock probe), the real help desks
# Redmine and Request Tracker, and chromium (the status page, tested in a real headless browser).
DEBIAN_PACKAGES="ca-certificates openssl systemd iputils-ping smartmontools chrony
  monitoring-plugins-basic prometheus-node-exporter prometheus prometheus-alertmanager
  redmine redmine-sqlite request-tracker5 rt5-db-sqlite rt5-standalone chromium
  monit faketime"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  need=()
  for pkg in $DEBIAN_PACKAGES; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
  if [ "${#need[@]}" -gt 0 ]; then
    echo "== installing Debian packages: ${need[*]}"
    # Packages must not start their services here: the tests start what they need themselves.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
      trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    # Redmine and Request Tracker (the help-desk backends' tests) on SQLite, configured
    # without questions; the tests create their databases themselves.
    debconf-set-selections <<'PRESEED'
request-tracker5 request-tracker5/dbconfig-install boolean false
request-tracker5 request-tracker5/install-cronjobs boolean false
request-tracker5 request-tracker5/rtname string rt.localhost
request-tracker5 request-tracker5/organization string localhost
request-tracker5 request-tracker5/correspondaddress string rt@localhost
request-tracker5 request-tracker5/commentaddress string rt-comment@localhost
request-tracker5 request-tracker5/webbaseurl string http://127.0.0.1
request-tracker5 request-tracker5/handle-siteconfig-permissions boolean true
redmine redmine/current-instances string default
redmine redmine/instances/default/dbconfig-install boolean false
redmine redmine/instances/default/database-type select sqlite3
redmine redmine/instances/default/default-language select en
PRESEED
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -q \
      --no-install-recommends "${need[@]}"
  fi
else
  echo "== not root or no apt-get: install these Debian packages yourself: $DEBIAN_PACKAGES"
fi

echo "== installing forewarn with its test dependencies"
python3 -m pip install -q --disable-pip-version-check -e '.[test]'

echo "== ruff"
python3 -m ruff check .
echo "== mypy"
python3 -m mypy
echo "== pytest"
python3 -m pytest "$@"
