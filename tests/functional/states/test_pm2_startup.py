"""
pm2 at boot through the real loader and a real pm2 (own PM2_HOME): ``pm2_startup.enabled``
(serverfix:pm2:startup true, Phase 5) predicts in test mode, runs ``pm2 startup`` and ``pm2 save``,
and changes nothing the second time; ``serverfix.diagnose``/``verify`` report the boot unit and the
backend missing from dump.pm2 before, and nothing after.

``pm2 startup`` itself writes /etc/systemd/system/pm2-<user>.service and enables it: host-global.
Here a stand-in pm2 (tests/support/pm2.py ``startup_stub``) does that step into a test's
directory tree with pm2's own unit template and the real ``systemctl --root``; every other pm2
command is the real pm2. The real unit at boot is left for the replica.
"""

import pytest
from salt.exceptions import CommandExecutionError

from tests.support.diagnose import settings
from tests.support.pm2 import sandbox, startup_stub

pytestmark = [pytest.mark.destructive_test, pytest.mark.skip_if_not_root]

APP = "intranet-backend"


@pytest.fixture
def box(tmp_path):
    with sandbox() as pm2box:
        pm2box.home = pm2box.root / ".pm2"  # pm2 startup writes PM2_HOME=<--hp>/.pm2
        tree = tmp_path / "systemd-root"
        pm2box.stub, pm2box.startup_log = startup_stub(pm2box.root / "bin", tree, pm2box.bin)
        pm2box.tree = str(tree)
        yield pm2box


def _kw(box):
    return {"user": box.user, "pm2_home": str(box.home), "pm2_bin": box.stub, "root": box.tree}


def _config(box, startup):
    return settings(
        pm2={"home": str(box.home), "bin": box.stub, "startup": startup},
        backend={"name": APP},
        remove_processes=[],
    )


def _boot(report, key="findings"):
    ids = ("pm2-boot-unit", "backend-not-saved", "pm2-boot", "pm2-saved")
    field = "severity" if key == "findings" else "status"
    return {item["id"]: item[field] for item in report[key] if item["id"] in ids}


def test_enabled_previews_applies_then_changes_nothing(modules, states, box):
    box.start(APP)
    box.wait_online(APP)
    # report only (the default): info findings, warn checks
    report = modules.serverfix.diagnose(config=_config(box, False), systemd_root=box.tree)
    assert _boot(report) == {"pm2-boot-unit": "info", "backend-not-saved": "info"}
    found = {f["id"]: f for f in report["findings"]}
    assert "pm2-root.service is not installed" in found["pm2-boot-unit"]["title"]
    assert found["pm2-boot-unit"]["fix"]["pillar"] == "serverfix:pm2:startup"
    assert f"pm2 startup systemd -u root --hp {box.root}" in found["pm2-boot-unit"]["fix"]["hint"]
    report = modules.serverfix.verify(config=_config(box, False), systemd_root=box.tree)
    assert _boot(report, "checks") == {"pm2-boot": "warn", "pm2-saved": "warn"}
    # with the flag on they are problems
    report = modules.serverfix.diagnose(config=_config(box, True), systemd_root=box.tree)
    assert _boot(report) == {"pm2-boot-unit": "warning", "backend-not-saved": "warning"}
    report = modules.serverfix.verify(config=_config(box, True), systemd_root=box.tree)
    assert _boot(report, "checks") == {"pm2-boot": "fail", "pm2-saved": "fail"}

    ret = states.pm2_startup.enabled(APP, test=True, **_kw(box))
    assert ret.result is None and set(ret.changes) == {"unit", "dump.pm2"}, ret
    assert "Would run pm2 startup systemd -u root and pm2 save" in ret.comment
    assert box.startup_log.read_text(encoding="utf-8") == "" and box.saved() == []

    ret = states.pm2_startup.enabled(APP, **_kw(box))
    assert ret.result is True and set(ret.changes) == {"unit", "dump.pm2"}, ret
    assert box.startup_log.read_text(encoding="utf-8").splitlines() == [
        f"startup systemd -u root --hp {box.root}"
    ]
    assert box.saved() == [APP]

    ret = states.pm2_startup.enabled(APP, **_kw(box))
    assert ret.result is True and ret.changes == {}, ret
    assert "pm2-root.service is enabled" in ret.comment and "in dump.pm2" in ret.comment
    assert len(box.startup_log.read_text(encoding="utf-8").splitlines()) == 1
    ret = states.pm2_startup.enabled(APP, test=True, **_kw(box))
    assert ret.result is True and ret.changes == {}, ret

    for startup in (False, True):
        report = modules.serverfix.diagnose(config=_config(box, startup), systemd_root=box.tree)
        assert _boot(report) == {}, report["findings"]
        report = modules.serverfix.verify(config=_config(box, startup), systemd_root=box.tree)
        assert _boot(report, "checks") == {"pm2-boot": "pass", "pm2-saved": "pass"}


def test_pm2_save_says_what_else_it_changes_in_the_dump(states, box):
    # pm2 save stores the whole running list: the preview names the other apps it touches
    box.start("saved-app")
    box.save()
    box.delete("saved-app")
    box.start("unsaved-app")
    box.start(APP)
    ret = states.pm2_startup.enabled(APP, test=True, **_kw(box))
    assert ret.changes["dump.pm2"]["new"] == (
        "with the app (pm2 save; also saves unsaved-app; drops saved-app)"
    ), ret.changes
    ret = states.pm2_startup.enabled(APP, **_kw(box))
    assert ret.result is True and sorted(box.saved()) == [APP, "unsaved-app"], ret
    assert any(".serverfix-" in p.name for p in box.home.iterdir())  # dump.pm2 backed up first


def test_a_backend_not_online_is_not_saved(states, box):
    box.start("other-app")
    box.save()
    ret = states.pm2_startup.enabled(APP, **_kw(box))  # the backend is not running
    assert ret.result is True and set(ret.changes) == {"unit"}, ret
    assert f"{APP} is not running, not online: not saved to dump.pm2" in ret.comment
    assert box.saved() == ["other-app"]


def test_a_pm2_home_pm2_startup_cannot_write_is_refused(states, box):
    box.home = box.root / "pm2"
    box.start(APP)
    ret = states.pm2_startup.enabled(APP, **_kw(box))
    assert ret.result is False and ret.changes == {}
    assert "named <home>/.pm2" in ret.comment
    assert box.startup_log.read_text(encoding="utf-8") == ""


def test_preflight_names_the_pillar_key_for_such_a_pm2_home(modules):
    config = settings(pm2={"home": "/srv/pm2", "startup": True})
    with pytest.raises(CommandExecutionError) as exc:
        modules.serverfix.preflight(config, pillar={"pm2": {"startup": True}}, phases=["backend"])
    assert any(
        e.startswith("serverfix:pm2:home: pm2_home '/srv/pm2': pm2 startup")
        for e in exc.value.info["errors"]
    ), exc.value.info


def test_preflight_refuses_startup_without_systemd(modules, tmp_path, monkeypatch):
    # fault injection: this host has systemctl; a PATH without it stands for a non-systemd host
    monkeypatch.setenv("PATH", str(tmp_path))
    config = settings(pm2={"startup": True})
    with pytest.raises(CommandExecutionError) as exc:
        modules.serverfix.preflight(config, pillar={"pm2": {"startup": True}}, phases=["backend"])
    assert any(
        e.startswith("serverfix:pm2:startup: true runs `pm2 startup systemd`, but systemctl")
        for e in exc.value.info["errors"]
    ), exc.value.info
