"""
The operator's whole job on the replica, over salt-ssh with the roster entry ``hetzner``: the main
job's eight steps (tools/mainjob/steps.py; ``./scripts/run-replica.sh`` runs the same functions as
``python -m tools.mainjob``), one test each, in order:

diagnose, preview (changes nothing), apply, apply with the restart flag, verify, re-apply (zero
changes), reboot, latency before -> after; the steps are listed in tools/mainjob/__init__.py.
"""

import os

import pytest

from tests.support.replica import SaltSsh
from tools.mainjob import steps

pytestmark = [pytest.mark.e2e, pytest.mark.destructive_test]

STEPS_IN_ORDER = True
LATENCY_REQUESTS = int(os.environ.get("SERVERFIX_LATENCY_REQUESTS", "10"))


@pytest.fixture(scope="module")
def job(replica, tmp_path_factory, e2e_report, progress):
    """The main job's state on this module's replica; the steps record into ``e2e_report``."""
    salt_ssh = SaltSsh(tmp_path_factory.mktemp("salt-ssh"), replica, steps.PILLAR)
    return steps.Job(replica, salt_ssh, requests=LATENCY_REQUESTS, say=progress, report=e2e_report)


def test_step1_diagnose_before(job):
    steps.diagnose(job)


def test_step2_preview_changes_nothing(job):
    steps.preview(job)


def test_step3_apply_without_restart(job):
    steps.apply(job)


def test_step4_apply_with_restart(job):
    steps.apply_restart(job)


def test_step5_verify(job):
    steps.verify(job)


def test_step6_reapply_zero_changes(job):
    steps.reapply(job)


def test_step7_reboot(job):
    steps.reboot(job)


def test_step8_latency_before_after(job):
    steps.latency(job)


def test_the_steps_are_the_main_jobs():
    """Every step of the main job has its test here, in the same order."""
    names = [name for name in globals() if name.startswith("test_step")]
    assert [func.__name__ for _, _, func in steps.STEPS] == [
        "diagnose",
        "preview",
        "apply",
        "apply_restart",
        "verify",
        "reapply",
        "reboot",
        "latency",
    ]
    assert len(names) == len(steps.STEPS)
