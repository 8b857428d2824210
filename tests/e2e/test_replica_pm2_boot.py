"""
pm2 at boot on the replica (issue 13), over salt-ssh: a server whose pm2 boot unit is missing is a
diagnose finding (report only by default); with ``serverfix:pm2:startup: true`` the formula runs
``pm2 startup systemd`` and ``pm2 save``, a second apply changes nothing, and after a reboot the
backend is back, started by ``pm2-root.service`` from the saved dump.
"""

import pytest

from tests.support.host import wait_for
from tests.support.replica import BACKEND, SaltSsh
from tools.mainjob import steps

pytestmark = [pytest.mark.e2e, pytest.mark.destructive_test]

STEPS_IN_ORDER = True
UNIT = "pm2-root.service"
STARTUP = {"pm2": {"startup": True}}


@pytest.fixture(scope="module")
def salt_ssh(replica, tmp_path_factory):
    return SaltSsh(tmp_path_factory.mktemp("salt-ssh-boot"), replica, steps.PILLAR)


def _unit_state(replica):
    return replica.ssh(f"systemctl is-enabled {UNIT} 2>&1; true", timeout=30).stdout.strip()


def test_a_missing_boot_unit_is_a_finding(replica, salt_ssh):
    # the server as pm2 leaves it without `pm2 startup`: no unit at all
    replica.ssh(
        f"systemctl disable {UNIT} 2>/dev/null; rm -f /etc/systemd/system/{UNIT}; "
        "systemctl daemon-reload",
        timeout=60,
    )
    assert _unit_state(replica) != "enabled"
    rc, report, _ = salt_ssh.call("serverfix.diagnose", config=salt_ssh.settings())
    assert rc == 0, report
    found = {f["id"]: f for f in report["findings"]}
    assert found["pm2-boot-unit"]["severity"] == "info", found  # report only by default
    assert found["pm2-boot-unit"]["fix"]["pillar"] == "serverfix:pm2:startup"


def test_the_flag_enables_the_unit_and_saves_the_backend(replica, salt_ssh):
    pillar = 'pillar={"serverfix": {"pm2": {"startup": true}}}'
    rc, preview, _ = salt_ssh.apply(pillar, "test=True")
    assert rc == 0 and preview.by_id("serverfix-pm2-startup")["result"] is None, preview.describe()
    assert _unit_state(replica) != "enabled"  # the preview changed nothing
    rc, run, _ = salt_ssh.apply(pillar)
    assert rc == 0 and not run.failed, run.describe()
    assert run.by_id("serverfix-pm2-startup")["changes"], run.describe()
    assert _unit_state(replica) == "enabled"
    rc, again, _ = salt_ssh.apply(pillar)
    assert rc == 0 and not again.changed, again.describe(again.changed)
    rc, report, _ = salt_ssh.call("serverfix.verify", config=salt_ssh.settings(**STARTUP))
    statuses = {c["id"]: c["status"] for c in report["checks"]}
    assert (statuses["pm2-boot"], statuses["pm2-saved"]) == ("pass", "pass"), report["checks"]


def test_the_backend_is_back_after_a_reboot(replica):
    replica.reboot()
    assert wait_for(
        lambda: steps.pm2_by_name(replica.snapshot()).get(BACKEND, {}).get("status") == "online",
        60,
    ), replica.snapshot()["pm2"]
    assert _unit_state(replica) == "enabled"
