#!/bin/sh
# Install everything the tests need, then run every test. Used as is by .ci/run.
#   sh tests/run.sh [pytest args]
set -eu
cd "$(dirname "$0")/.."

# Headless Chromium for the tag's and the UI's browser tests, and npm for axe-core, which
# the UI tests inject into every page (Debian packages; installing them needs root).
missing=""
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    else
        echo "tests/run.sh: missing$missing; install it (apt-get install -y$missing) as root" >&2
        exit 1
    fi
fi
# axe-core, pinned in tests/ui/package-lock.json.
[ -f tests/ui/node_modules/axe-core/axe.min.js ] ||
    npm ci --prefix tests/ui --silent --no-audit --no-fund

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
