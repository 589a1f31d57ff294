#!/usr/bin/env bash
# Install everything the tests need on a fresh Debian 12 machine, then run the whole suite.
# Usage: tests/run.sh [pytest args...]   (run from anywhere; root or sudo for apt-get)
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

# Real servers the integration suites start on loopback (see docs/performance.md, tests/integration).
if ! command -v influxd >/dev/null 2>&1; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq influxdb >/dev/null
fi

PY="${PYTHON:-python3}"
"$PY" -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | grep -v "^WARNING: Running pip as" || true

"$PY" -m ruff check carbond tests
exec "$PY" -m pytest -p no:cacheprovider "$@"
