"""
Proof in numbers, kept in the suite (the proof tool, tools/proof, measures; these assert):
preview fidelity
from "before", for the restart step, for the fix in one go and from a half-fixed replica;
idempotence without mutating calls; the Redis password nowhere it must not be; speed against a
one-state SLS.

One replica (named ``proof``, password set) for fidelity, idempotence, secrets and speed; the
one-go and half-fixed cases boot fresh ones. ``SERVERFIX_PROOF_MODE=full`` runs the local mode
(7 speed
repetitions, the whole guest scanned for world-readable files); CI runs the ``ci`` subset.
The table is printed at the end of the module and written to artifacts/proof-tests-main.json;
``./scripts/proof-report.sh`` is the documented command for the whole report.
"""

import os

import pytest

from tools.proof.lab import SPEED_GOAL
from tools.proof.report import record_half_fixed, record_main, record_one_go

pytestmark = [pytest.mark.e2e, pytest.mark.destructive_test]

PROOF_NAME = "main"  # the proof_lab fixture (conftest.py)
PROOF_MODE = MODE = os.environ.get("SERVERFIX_PROOF_MODE", "ci")
# CI machines are shared and noisy: there the speed check guards against regressions (a wide
# margin); the goal itself (<= 1.5x) is checked in the full mode and reported by proof-report.sh
SPEED_LIMIT = SPEED_GOAL if MODE == "full" else 2.0


@pytest.fixture(scope="module")
def lab(proof_lab):
    return proof_lab


@pytest.fixture(scope="module")
def main(lab):
    return record_main(lab)


def describe(entry):
    return {
        k: entry.get(k)
        for k in (
            "predicted_not_changed",
            "changed_not_predicted",
            "missing_in_one_run",
            "failed",
            "error",
        )
    }


def test_preview_predicts_exactly_what_the_apply_changes(main):
    entry = main["fidelity"]["before"]
    assert entry["mismatches"] == 0 and not entry["failed"], describe(entry)
    assert entry["changed"] >= 6, entry[
        "rows"
    ]  # Redis x3, .env, prisma-studio, swap x2 from "before"


def test_preview_predicts_the_restart(main):
    entry = main["fidelity"]["restart"]
    assert entry["mismatches"] == 0 and not entry["failed"], describe(entry)
    assert entry["changed"] == 1, entry["rows"]  # the backend restart, nothing else


def test_reapply_changes_nothing_and_calls_nothing_that_mutates(main):
    entry = main["idempotence"]
    assert entry["changes"] == 0, entry
    assert entry["mutating_calls"] == 0, [run["mutating_list"] for run in entry["runs"]]
    for run in entry["runs"]:
        # one jlist (the verify state reuses the processes state's); two read-only dpkg-query:
        # pkg.installed's and the preflight's Redis version (BullMQ's minimum)
        assert run["pm2_calls"] <= 1 and run["pkg_calls"] <= 2, run
        assert set(run["pkg_commands"]) <= {"dpkg-query -W"}, run


def test_the_redis_password_shows_up_nowhere(main):
    sec = main["secrets"]
    assert sec["redis_requires_it"], (
        "Redis answers without the password: the new requirepass is not in effect"
    )
    assert not sec["salt_ssh_output_or_log_leaks"], sec
    assert not sec["guest_log_files_with_it"] and not sec["journal_lines_with_it"], sec
    assert not sum(sec["argv"]["hits"].values()) and sec["argv"]["samples"]["guest"] > 50, sec[
        "argv"
    ]
    assert (
        not sec["world_readable"]["files_with_it"] and sec["world_readable"]["files_checked"] > 100
    ), sec
    assert sec["backups_0600"], sec["backups"]


def test_speed_against_a_one_state_sls(main):
    speed = main["speed"]
    assert speed["ratio_noop"] <= SPEED_LIMIT, speed["median"]
    assert speed["ratio_preview"] <= SPEED_LIMIT, speed["median"]
    assert speed["median"]["diagnose"] < 10 and speed["median"]["verify"] < 10, speed["median"]


def test_preview_of_the_fix_in_one_go(main, lab):
    entry = record_one_go(lab)
    assert entry["mismatches"] == 0 and not entry.get("failed"), describe(entry)
    assert "serverfix-backend-restarted" in [
        r["id"] for r in entry["rows"] if r["predicted"] and r["changed"]
    ], entry


def test_preview_from_a_half_fixed_replica(main, lab):
    entry = record_half_fixed(lab)
    assert entry["mismatches"] == 0 and not entry.get("failed"), describe(entry)
    assert entry["changed"] >= 4, entry[
        "rows"
    ]  # .env, prisma-studio's saved list, swap x2, the restart
