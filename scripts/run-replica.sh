#!/usr/bin/env bash
# The main job (first command in README.md): on a fresh Debian 12 machine, as root, it
#   1. installs what it needs (apt packages, the venv at /var/cache/serverfix/venv: scripts/lib/setup.sh),
#   2. builds the replica image once (cached in /var/cache/serverfix/replica; ~2 min the first time),
#   3. boots the replica of the server in the runbook's "before" state and runs the operator's job over
#      salt-ssh with the roster entry `hetzner` (tests/e2e/test_replica_salt_ssh.py, the same steps CI runs):
#      diagnose -> preview (test=True) -> apply -> apply with the restart flag -> verify -> re-apply
#      -> reboot -> POST /reservations latency before/after,
#   4. prints a summary (findings before, preview, what changed, verify, latency before -> after) and
#      tears the replica down.
#
# Options:
#   --keep             leave the replica running (./scripts/replica.sh ssh CMD, ./scripts/replica.sh down)
#   --requests N       POST /reservations per latency measurement (default 10)
#   --master-minion    also apply the formula through a real salt-master + salt-minion in a fresh replica
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/setup.sh

usage() { sf_usage "$0"; }
keep=0 requests=10 tests=(tests/e2e/test_replica_salt_ssh.py)
while [ $# -gt 0 ]; do
  case $1 in
    --keep) keep=1 ;;
    --requests) requests=${2:?--requests needs a number}; shift ;;
    --master-minion) tests+=(tests/e2e/test_replica_master_minion.py) ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
  shift
done

started=$SECONDS
sf_replica_ready scripts/run-replica.sh

step "the operator's job on the replica, over salt-ssh (roster entry hetzner)"
# the tests tear the replica down themselves; this also covers an interrupted run
[ $keep = 1 ] || trap 'bash scripts/replica.sh down >/dev/null 2>&1' EXIT
rc=0
SERVERFIX_REPLICA_KEEP=$keep SERVERFIX_LATENCY_REQUESTS=$requests PATH="$venv/bin:$PATH" \
  "$venv/bin/python" -m pytest --run-destructive -p no:cacheprovider -v --no-header "${tests[@]}" || rc=$?

step "main job finished in $((SECONDS - started)) s (exit $rc)$([ $keep = 1 ] && echo '; replica kept: ./scripts/replica.sh down when done')"
exit $rc
