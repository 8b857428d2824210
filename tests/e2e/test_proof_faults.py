"""
The fault matrix, kept in the suite (tools/proof/faults.py injects and checks; these assert): each
fault from a clean replica must end with a clear error (or be handled correctly) and lose nothing:
the .env byte-identical or restored from its backup, the backend running, no half-made swap file.

- Refused in the preflight (one replica: each case proves with a snapshot that nothing changed,
  so the next starts clean too): pm2 missing, disk too small for the swap file, .env immutable,
  .env on a read-only mount, a bad pillar value of each kind (``SERVERFIX_PROOF_MODE=full``: every
  case of preflight_faults.PILLAR_CASES and the read-only mount; CI: four kinds: unknown key,
  wrong type, a
  secret that must stay masked, a Redis host its bind does not cover).
- On a fresh replica each: Redis cannot start (port taken), .env symlinked, CRLF, duplicate keys,
  backend crashing after the restart (rollback), SSH connection lost mid-run (re-run completes).

The table is printed at the end of the module and written to artifacts/proof-tests-faults.json.
"""

import os

import pytest

from tools.proof import faults, preflight_faults
from tools.proof.report import record_faults

pytestmark = [pytest.mark.e2e, pytest.mark.destructive_test]

PROOF_NAME = "faults"  # the proof_lab fixture (conftest.py)
PROOF_MODE = MODE = os.environ.get("SERVERFIX_PROOF_MODE", "ci")
REFUSED = (
    ["pm2 missing", "disk too small", ".env immutable"]
    + ([".env read-only mount"] if MODE == "full" else [])
    + [
        "bad pillar: " + case[0]
        for case in preflight_faults.PILLAR_CASES
        if MODE == "full" or case[3]
    ]
)


@pytest.fixture(scope="module")
def lab(proof_lab):
    return proof_lab


@pytest.fixture(scope="module")
def refused(lab):
    return {
        entry["id"]: entry
        for entry in record_faults(lab, preflight_faults.faults_refused_in_preflight)
    }


def failed_checks(entry):
    return {
        "failed checks": [k for k, v in entry["checks"].items() if not v],
        "error": entry["error"],
        "changed": entry.get("changed"),
    }


@pytest.mark.parametrize("fault", REFUSED)
def test_refused_before_anything_changes(refused, fault):
    if fault not in refused:
        pytest.skip(f"{fault}: not possible in this replica (see the report)")
    entry = refused[fault]
    assert entry["ok"], failed_checks(entry)
    assert entry["error"].startswith("Nothing was changed"), entry["error"]


@pytest.mark.parametrize(
    "scenario", faults.FAULTS_ON_FRESH_REPLICAS, ids=lambda f: f.__name__[len("fault_") :]
)
def test_fault_on_a_fresh_replica(lab, scenario):
    entry = record_faults(lab, scenario)[0]
    assert entry["ok"], failed_checks(entry)
