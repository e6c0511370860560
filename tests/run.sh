#!/bin/sh
# Install everything the tests need, then run every test. Used as is by .ci/run.
#   sh tests/run.sh [pytest args]
set -eu
cd "$(dirname "$0")/.."

# Headless Chromium for the browser tests, npm for what they serve or inject into pages,
# Java 17 for Spark in local mode, and redis-server and redis-cli for a real Redis Cluster
# (Debian packages; installing them needs root).
missing=""
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
command -v java >/dev/null 2>&1 || missing="$missing openjdk-17-jre-headless"
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    else
        echo "tests/run.sh: missing$missing; install it (apt-get install -y$missing) as root" >&2
        exit 1
    fi
fi
# axe-core, IAB's TCF reference CMP and Segment's analytics.js 2.0, pinned in
# tests/package-lock.json (npm ci again whenever the lock file is newer than the install).
[ tests/node_modules/.package-lock.json -nt tests/package-lock.json ] ||
    npm ci --prefix tests --silent --no-audit --no-fund

# A virtual environment of the project's own unless one is active already.
if [ -z "${VIRTUAL_ENV:-}" ]; then
    [ -x .venv/bin/python ] || python3 -m venv .venv
    . .venv/bin/activate
fi
python -m pip install -q --disable-pip-version-check -e '.[test]'

# Lint and format first: a finding stops the run before the tests (minutes) start.
ruff check --quiet .
ruff format --check --quiet .

DMP_REQUIRE_BROWSER=1 exec python -m pytest -q "$@"
