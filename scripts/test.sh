#!/usr/bin/env bash
# The test command (README.md): installs everything the suite needs on a fresh Debian 12
# machine, then runs the whole suite on Salt 3008, then (with no arguments, as CI runs it) the
# Salt 3006 LTS run, scripts/test-salt3006.sh (the functional layer and a real salt-call apply on
# salt 3006 / Python 3.10); it fails when either run fails. Extra arguments go to pytest (e.g.
# -k redis, tests/unit), for the 3008 run only. When every path given is in tests/unit, only the
# venv is set up (the unit layer needs nothing else): no root, no apt packages, no npm tools.
set -euo pipefail
cd "$(dirname "$0")/.."
# shared with scripts/run-replica.sh: apt packages, the venv, the local npm tools
. scripts/lib/setup.sh

unit_only() {  # every path argument is in tests/unit (and there is one); options are not paths
  local arg path seen=0
  for arg in "$@"; do
    path=${arg%%::*}
    case $arg in -*) continue ;; esac
    [ -e "$path" ] || continue                # an option's value (-k redis)
    case $(realpath -m "$path")/ in
      "$PWD"/tests/unit/*) seen=1 ;;
      *) return 1 ;;
    esac
  done
  [ $seen = 1 ]
}

if unit_only "$@"; then
  sf_venv
else
  sf_require_root scripts/test.sh "(the suite installs packages, swapon, sysctl)"
  sf_apt "${SF_TEST_APT[@]}"
  sf_venv
  sf_node_tools
fi

step "pytest $*"
if [ $# -gt 0 ]; then
  PATH="$venv/bin:$PATH" exec "$venv/bin/python" -m pytest --run-destructive "$@"
fi
# the whole suite: 3008, then 3006 whatever 3008 gave (both results are worth reading)
rc=0
PATH="$venv/bin:$PATH" "$venv/bin/python" -m pytest --run-destructive || rc=$?
rc3006=0
bash scripts/test-salt3006.sh || rc3006=$?
step "salt 3008: $([ $rc = 0 ] && echo passed || echo "FAILED (exit $rc)");" \
     "salt 3006: $([ $rc3006 = 0 ] && echo passed || echo "FAILED (exit $rc3006)")"
[ $rc = 0 ] && [ $rc3006 = 0 ]
