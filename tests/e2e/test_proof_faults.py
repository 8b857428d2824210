"""
The fault matrix, kept in the suite (tests/e2e/proof.py injects and checks, these assert): each
fault from a clean replica must end with a clear error (or be handled correctly) and lose nothing:
the .env byte-identical or restored from its backup, the backend running, no half-made swap file.

- Refused in the preflight (one replica: each case proves with a snapshot that nothing changed,
  so the next starts clean too): pm2 missing, disk too small for the swap file, .env immutable,
  .env on a read-only mount, a bad pillar value of each kind (``SERVERFIX_PROOF_MODE=full``: every
  case of proof.PILLAR_CASES and the read-only mount; CI: four kinds: unknown key, wrong type, a
  secret that must stay masked, a Redis host its bind does not cover).
- On a fresh replica each: Redis cannot start (port taken), .env symlinked, CRLF, duplicate keys,
  backend crashing after the restart (rollback), SSH connection lost mid-run (re-run completes).

The table is printed at the end of the module and written to artifacts/proof-tests-faults.json.
"""

import os

import pytest

from tests.e2e import proof

pytestmark = [pytest.mark.e2e, pytest.mark.destructive_test]

MODE = os.environ.get("SERVERFIX_PROOF_MODE", "ci")
REFUSED = (["pm2 missing", "disk too small", ".env immutable"] + ([".env read-only mount"] if MODE == "full" else []) +
           ["bad pillar: " + case[0] for case in proof.PILLAR_CASES if MODE == "full" or case[3]])


@pytest.fixture(scope="module")
def lab(tmp_path_factory, progress, pytestconfig):
    with proof.pytest_lab(tmp_path_factory, "faults", MODE, progress, pytestconfig) as opened:
        yield opened


@pytest.fixture(scope="module")
def refused(lab):
    return {entry["id"]: entry for entry in proof.record_faults(lab, proof.faults_refused_in_preflight)}


def failed_checks(entry):
    return {"failed checks": [k for k, v in entry["checks"].items() if not v], "error": entry["error"],
            "changed": entry.get("changed")}


@pytest.mark.parametrize("fault", REFUSED)
def test_refused_before_anything_changes(refused, fault):
    if fault not in refused:
        pytest.skip(f"{fault}: not possible in this replica (see the report)")
    entry = refused[fault]
    assert entry["ok"], failed_checks(entry)
    assert entry["error"].startswith("Nothing was changed"), entry["error"]


@pytest.mark.parametrize("scenario", proof.FAULTS_ON_FRESH_REPLICAS, ids=lambda f: f.__name__[len("fault_"):])
def test_fault_on_a_fresh_replica(lab, scenario):
    entry = proof.record_faults(lab, scenario)[0]
    assert entry["ok"], failed_checks(entry)
