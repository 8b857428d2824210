#!/usr/bin/env bash
# Proof in numbers (README.md): on a fresh Debian 12 machine, as root, it
#   1. installs what it needs (apt packages, the venv at /var/cache/serverfix/venv: scripts/lib/setup.sh),
#   2. builds the replica image once (cached in /var/cache/serverfix/replica),
#   3. measures on replicas of the server, over salt-ssh (roster entry hetzner), with a Redis password set:
#      preview fidelity (before, restart step, half-fixed), idempotence (changes and mutating pm2 /
#      package-manager / systemctl / swap calls of a re-apply), the fault matrix (each from a clean
#      replica), secrets (output, logs, argv, world-readable files, backup modes) and speed (medians
#      of interleaved runs against a one-state SLS over the same transport),
#   4. prints a table and writes artifacts/proof-report.json; exit 1 when a goal is missed.
# The measuring is the proof tool, tools/proof (python -m tools.proof); tests/e2e/test_proof_*.py assert
# the same in the suite (CI).
#
# Options:
#   --ci          the CI subset (what tests/e2e/test_proof_*.py run in CI): 3 speed repetitions,
#                 one full apply, four kinds of bad pillar value, files written during the runs scanned
#   --reps N      speed repetitions (default: 7, --ci: 3)
#   --out FILE    the JSON report (default artifacts/proof-report.json)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/setup.sh

usage() { sf_usage "$0"; }
args=(--mode full)
while [ $# -gt 0 ]; do
  case $1 in
    --ci) args+=(--mode ci) ;;
    --reps) args+=(--reps "${2:?--reps needs a number}"); shift ;;
    --out) args+=(--out "${2:?--out needs a file}"); shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
  shift
done

started=$SECONDS
sf_replica_ready scripts/proof-report.sh

step "measuring on the replica (its own name: proof; waits for another replica to finish)"
# the report tears its replica down itself; this also covers an interrupted run
trap 'REPLICA_NAME=${SERVERFIX_PROOF_REPLICA:-proof} REPLICA_SUBNET=${SERVERFIX_PROOF_SUBNET:-9} bash scripts/replica.sh down >/dev/null 2>&1' EXIT
rc=0
PATH="$venv/bin:$PATH" "$venv/bin/python" -m tools.proof "${args[@]}" || rc=$?

step "proof report finished in $((SECONDS - started)) s (exit $rc)"
exit $rc
