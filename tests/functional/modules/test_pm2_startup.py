"""
pm2_startup through the real loader: the boot unit ``pm2-<user>.service`` read with the real
``systemctl --root`` from a test's directory tree (the host's /etc/systemd/system is host-global:
pm2's own ``pm2 startup`` always writes there, so a stand-in pm2 does that step into the tree),
and the ``--hp`` rule of pm2 startup.
"""

import pytest
from salt.exceptions import SaltInvocationError

from tests.support.paths import node_tool
from tests.support.pm2 import boot_unit, startup_stub


def test_no_unit_is_named(modules, tmp_path):
    status = modules.pm2_startup.status("root", "/root/.pm2", root=str(tmp_path))
    assert status["ok"] is False and status["path"] is None and status["state"] == "not-found"
    assert status["problems"] == [
        "pm2-root.service is not installed: pm2 startup systemd never ran for root"
    ]


def test_disabled_then_enabled_unit(modules, tmp_path):
    unit = boot_unit(tmp_path, "root", "/root/.pm2", enabled=False)
    status = modules.pm2_startup.status("root", "/root/.pm2", root=str(tmp_path))
    assert status["path"] == str(unit) and status["state"] == "disabled"
    assert status["problems"] == [
        "pm2-root.service is disabled, not enabled: pm2 does not start at boot"
    ]
    boot_unit(tmp_path, "root", "/root/.pm2")
    status = modules.pm2_startup.status("root", "/root/.pm2", root=str(tmp_path))
    assert status["ok"] is True and status["enabled"] is True, status
    assert status["unit_user"] == "root" and status["unit_pm2_home"] == "/root/.pm2"


def test_unit_for_another_pm2_home_or_user(modules, tmp_path):
    # an old `pm2 startup` run with another --hp resurrects another dump.pm2
    boot_unit(tmp_path, "root", "/home/old/.pm2", unit_user="deploy")
    status = modules.pm2_startup.status("root", "/root/.pm2", root=str(tmp_path))
    assert status["enabled"] is True and status["ok"] is False
    assert any("runs pm2 as deploy, not root" in p for p in status["problems"])
    assert any(
        "resurrects PM2_HOME /home/old/.pm2, not /root/.pm2" in p for p in status["problems"]
    )


def test_home_for_is_pm2_startups_hp(modules):
    assert modules.pm2_startup.home_for("/root/.pm2") == "/root"
    assert modules.pm2_startup.home_for("/home/deploy/.pm2/") == "/home/deploy"
    for bad in ("/srv/pm2", "relative/.pm2", ""):
        with pytest.raises(SaltInvocationError, match="named <home>/.pm2"):
            modules.pm2_startup.home_for(bad)


def test_startup_runs_pm2_startup_systemd_for_the_user(modules, tmp_path):
    tree = tmp_path / "root"
    stub, log = startup_stub(tmp_path / "bin", tree, node_tool("pm2"))
    assert modules.pm2_startup.startup("root", "/srv/app/.pm2", stub) is True
    assert log.read_text(encoding="utf-8").split("\n")[0] == "startup systemd -u root --hp /srv/app"
    status = modules.pm2_startup.status("root", "/srv/app/.pm2", root=str(tree))
    assert status["ok"] is True, status
