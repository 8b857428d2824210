"""
The fault matrix of issue 12 (tools/proof/issue12.py injects and checks; these assert), in the
full mode only (``SERVERFIX_PROOF_MODE=full``): the fixes land in parallel, so CI does not depend
on them yet. Each case from a clean replica, checked by invariants, not by the wording of messages:

- 1: a Redis installed by hand, ``appendonly no``, keys in dump.rdb: every key after the apply
  and after a restart;
- 2: ``swap:sysctl_file`` Debian's 99-sysctl.conf symlink, or an admin's file: refused, the file
  byte-identical; 4: ``remove_processes`` naming the backend: refused, the backend online;
- 3: the .env readable by a non-root user through an ACL, a user.* xattr: both kept, still readable;
- 5: Latin-1 bytes in /etc/fstab and the .env: completes, no traceback, every other byte kept;
- 13: ``dotenv:extra`` secrets and a URL with credentials: in no output;
- 14: ``requirepass`` set by hand, pillar password ``''``: refused, auth kept, .env untouched.

Run just these:
``SERVERFIX_PROOF_MODE=full pytest --run-destructive tests/e2e/test_proof_issue12.py``
(or ``python -m tools.proof --only issue12``, ``--only issue12:1,14``). The table is printed at
the end and written to artifacts/proof-tests-issue12.json.
"""

import os

import pytest

from tools.proof import issue12
from tools.proof.report import record_faults

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.destructive_test,
    pytest.mark.skipif(
        os.environ.get("SERVERFIX_PROOF_MODE", "ci") != "full",
        reason="issue 12's cases run in the full mode only (SERVERFIX_PROOF_MODE=full)",
    ),
]

PROOF_NAME = "issue12"  # the proof_lab fixture (conftest.py)
PROOF_MODE = "full"


@pytest.fixture(scope="module")
def lab(proof_lab):
    return proof_lab


def failed_checks(entry):
    return {
        "failed checks": [k for k, v in entry["checks"].items() if not v],
        "error": entry["error"],
        "changed": entry.get("changed"),
    }


@pytest.mark.parametrize("scenario", issue12.cases(), ids=lambda f: f.__name__)
def test_issue12_case(lab, scenario):
    for entry in record_faults(lab, scenario):
        assert entry["ok"], (entry["id"], failed_checks(entry))


def test_issue12_secrets_in_no_output(lab):
    if not lab.extra_secrets:
        pytest.skip("no case registered a secret (every case was skipped or failed early)")
    leaks = {ssh.dir.name: ssh.leaks(lab.extra_secrets) for ssh in lab.salt_runs}
    assert not any(leaks.values()) and not lab.extra_guest_hits, (leaks, lab.extra_guest_hits)
