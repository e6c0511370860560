#!/bin/sh
# Install everything the tests need, then run every test. Used as is by .ci/run.
#   sh tests/run.sh [pytest args]
set -eu
cd "$(dirname "$0")/.."

# Headless Chromium for the tag's browser tests (Debian package; needs root).
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "tests/run.sh: chromium is missing; install it (apt-get install -y chromium) as root" >&2
        exit 1
    fi
fi

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
