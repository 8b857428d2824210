"""
The formula through a real salt-master (on the host, listening only on the replica's veth address)
and a real salt-minion inside a fresh replica (minion id ``hetzner``): the commands of the README's
master/minion section, as written:

    salt-key -a hetzner                      (after comparing the pending key with the minion's own)
    salt hetzner saltutil.sync_all
    salt hetzner state.apply serverfix test=True
    salt hetzner state.apply serverfix pillar='{"serverfix": {"backend": {"restart": true}}}'
    salt hetzner serverfix.verify
    salt hetzner state.apply serverfix       (again: zero changes)

The minion is Salt from PyPI (the same pin as the host venv, requirements-test.txt) in a venv in the
guest, installed from wheels built on the host (cached beside the replica image), so the guest needs
no index of its own.
"""

import time

import pytest

from tests.support.fleet import install_minion, start_minion
from tests.support.replica import HEALTH_URL_IN_GUEST, RESTART_FLAG, ROSTER_ID, StateRun
from tests.support.salt_master import HostMaster

pytestmark = [pytest.mark.e2e, pytest.mark.destructive_test]

STEPS_IN_ORDER = True


@pytest.fixture(scope="module")
def entry(e2e_report):
    return e2e_report.setdefault("steps", {}).setdefault("master_minion", {"lines": []})


@pytest.fixture(scope="module")
def master(replica, tmp_path_factory, progress):
    """A salt-master on the host, bound to the host end of the replica's veth only."""
    host = HostMaster(
        tmp_path_factory.mktemp("mm"),
        replica.facts["REPLICA_HOST_IP"],
        {ROSTER_ID: {"serverfix": {"verify": {"url": HEALTH_URL_IN_GUEST}}}},
    )
    progress(f"starting salt-master on {host.address}:{host.ports['ret_port']}")
    with host:
        yield host


def salt(master, *args, timeout=900):
    """``salt hetzner <args>`` against the test master: (returncode, the minion's data)."""
    rc, data = master.salt(ROSTER_ID, *args, timeout=timeout)
    assert ROSTER_ID in data, f"salt {' '.join(args)}: no answer from {ROSTER_ID} (rc {rc}): {data}"
    return rc, data[ROSTER_ID]


def test_minion_installed_and_key_accepted(replica, master, entry, progress):
    progress("installing the pinned Salt into /opt/salt in the replica")
    seconds, how = install_minion(replica, progress)
    entry["minion_install_seconds"] = round(seconds, 1)
    public_key = start_minion(replica, master.minion_config(ROSTER_ID))
    progress("waiting for the minion's key; comparing it with the minion's own before accepting it")
    master.accept({ROSTER_ID: public_key})
    entry["lines"].append(
        f"minion installed in {seconds:.1f} s ({how}); its key matched the pending one and was "
        "accepted"
    )


def test_sync_and_preview(replica, master, entry, progress):
    progress("salt hetzner saltutil.sync_all")
    rc, synced = salt(master, "saltutil.sync_all")
    assert rc == 0 and "modules.serverfix" in synced["modules"], synced
    progress("salt hetzner state.apply serverfix test=True")
    before = replica.snapshot()
    rc, data = salt(master, "state.apply", "serverfix", "test=True")
    run = StateRun(data)
    assert rc == 0 and not run.failed and run.pending, run.describe()
    after = replica.snapshot()
    for key in ("files", "redis_installed", "swap_active", "sysctl", "pm2", "pm2_saved"):
        assert after[key] == before[key], key
    entry["lines"].append(f"test=True: {len(run.pending)} states would change, nothing changed")


def test_apply_with_restart_and_verify(replica, master, entry, progress):
    progress("salt hetzner state.apply serverfix " + RESTART_FLAG)
    started = time.monotonic()
    rc, data = salt(master, "state.apply", "serverfix", RESTART_FLAG)
    seconds = time.monotonic() - started
    run = StateRun(data)
    assert rc == 0 and not run.failed, run.describe()
    assert replica.app_mode() == "queue"
    progress("salt hetzner serverfix.verify")
    rc, report = salt(master, "serverfix.verify")
    assert rc == 0 and report["ok"] is True, report
    entry["lines"].append(
        f"apply: {len(run.changed)} states changed in {seconds:.0f} s, backend in queue mode; "
        f"verify: {report['counts']}"
    )


def test_reapply_zero_changes(master, entry, progress):
    progress("salt hetzner state.apply serverfix   (re-apply)")
    rc, data = salt(master, "state.apply", "serverfix")
    run = StateRun(data)
    assert rc == 0 and not run.failed and not run.changed, run.describe(run.changed)
    entry["lines"].append(f"re-apply: {len(run.changed)} changes")
