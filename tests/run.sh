#!/usr/bin/env bash
# Install everything the tests need on a fresh Debian 12 machine, then run the whole suite.
# Usage: tests/run.sh [pytest args...]   (run from anywhere; root or sudo for apt-get)
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

# Real servers the integration suites start on loopback (see docs/performance.md, tests/integration).
# InfluxDB 1.6.7 (Debian), and Go + VictoriaMetrics sources for a real /api/v2/write server
# (built once by the test fixture, cached in ~/.cache/carbond-tests).
APT_PACKAGES="influxdb openssl systemd golang-go golang-github-victoriametrics-victoriametrics-dev \
  golang-github-valyala-fastjson-dev golang-github-valyala-fastrand-dev golang-github-valyala-quicktemplate-dev \
  golang-github-valyala-histogram-dev golang-github-victoriametrics-metrics-dev \
  golang-github-victoriametrics-metricsql-dev golang-github-victoriametrics-fastcache-dev"
missing=""
for pkg in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

PY="${PYTHON:-python3}"
# torch first, pinned: the CPU build; left to resolve on its own, pip may fetch a multi-GB CUDA build
PIP_ROOT_USER_ACTION=ignore "$PY" -m pip install -q --disable-pip-version-check torch==2.13.0
PIP_ROOT_USER_ACTION=ignore "$PY" -m pip install -q --disable-pip-version-check -e '.[test,influx,reports,optimize,examples]'

"$PY" -m ruff check carbond tests
exec "$PY" -m pytest -p no:cacheprovider "$@"
