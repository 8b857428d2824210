#!/usr/bin/env bash
# The test command (README.md): installs everything the suite needs on a fresh Debian 12
# machine, then runs the whole suite. Extra arguments go to pytest (e.g. -k redis, tests/unit).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
# shared with scripts/run-replica.sh: apt packages, the venv, the local npm tools
. scripts/lib/setup.sh

sf_require_root scripts/test.sh "(the suite installs packages, swapon, sysctl)"
sf_apt "${SF_TEST_APT[@]}"
sf_venv
sf_node_tools

step "pytest $*"
export PATH="$venv/bin:$PATH"
exec "$venv/bin/python" -m pytest --run-destructive "$@"
