#!/usr/bin/env bash
# The main job (first command in README.md): on a fresh Debian 12 machine, as root, it
#   1. installs what it needs (apt packages, the venv at /var/cache/serverfix/venv: scripts/lib/setup.sh),
#   2. builds the replica image once (cached in /var/cache/serverfix/replica; ~2 min the first time),
#   3. runs the main job, `python -m tools.mainjob` (tools/mainjob; tests/e2e/test_replica_salt_ssh.py
#      drives the same steps in CI): it boots the replica of the server in the runbook's "before" state
#      and does the operator's job over salt-ssh with the roster entry `hetzner`, one progress line per step:
#      diagnose -> preview (test=True) -> apply -> apply with the restart flag -> verify -> re-apply
#      -> reboot -> POST /reservations latency before/after,
#   4. prints a summary (findings before, preview, what changed, verify, latency before -> after), writes
#      the figures to /var/cache/serverfix/replica/last-run.json and tears the replica down.
# Exit 0 when every step passed, 1 when one failed.
#
# Options:
#   --keep             leave the replica running (./scripts/replica.sh ssh CMD, ./scripts/replica.sh down)
#   --requests N       POST /reservations per latency measurement (default 10)
#   --master-minion    also apply the formula through a real salt-master + salt-minion in a fresh replica
#   --json             the report as JSON on stdout (progress and summary on stderr)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/setup.sh

usage() { sf_usage "$0"; }
job_args=() keep_replica=0
while [ $# -gt 0 ]; do
  case $1 in
    --keep) job_args+=(--keep); keep_replica=1 ;;
    --requests) job_args+=(--requests "${2:?--requests needs a number}"); shift ;;
    --master-minion|--json) job_args+=("$1") ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
  shift
done

started=$SECONDS
sf_replica_ready scripts/run-replica.sh >&2   # stdout is the job's (--json)

step "the operator's job on the replica, over salt-ssh (roster entry hetzner)" >&2
# the job tears the replica down itself; this also covers an interrupted run
[ $keep_replica = 1 ] || trap 'bash scripts/replica.sh down >/dev/null 2>&1' EXIT
rc=0
PATH="$venv/bin:$PATH" "$venv/bin/python" -m tools.mainjob "${job_args[@]}" || rc=$?

step "main job finished in $((SECONDS - started)) s (exit $rc)$([ $keep_replica = 1 ] && echo '; replica kept: ./scripts/replica.sh down when done')" >&2
exit $rc
