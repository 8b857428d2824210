"""
formula/serverfix/swap.sls (Phase 4) rendered and applied through the real loader: the pillar's
swap settings reach the states, test=True changes nothing and predicts the real run exactly, the
second run changes nothing, bad pillar stops everything in the preflight.

The swap file lives in a temporary directory on ext4. The SLS has no fstab setting, so this test
writes the real /etc/fstab: it is restored byte for byte (and the backups made are removed). The
sysctl file is a unique one under /etc/sysctl.d (the pillar contract requires that directory),
removed afterwards; the vm.* values are restored.
"""

import glob
import os
import uuid

import pytest

from tests.support.loader import DEFAULTS
from tests.support.swap import active_swap, read_sysctl

pytestmark = pytest.mark.destructive_test

FSTAB = "/etc/fstab"
# the formula's backups of it: below serverfix:backups:dir (default), or next to it (dir: '')
FSTAB_BACKUPS = ("/var/backups/serverfix/etc/fstab.serverfix-*.bak", FSTAB + ".serverfix-*.bak")


def _fstab_backups():
    return {name for pattern in FSTAB_BACKUPS for name in glob.glob(pattern)}


IDS = ("serverfix-swap-file-present", "serverfix-swap-sysctl-persisted")


@pytest.fixture
def real_fstab():
    """/etc/fstab exactly as it was afterwards, and none of the backups the run made."""
    with open(FSTAB, "rb") as handle:
        saved = handle.read()
    backups = _fstab_backups()
    try:
        yield FSTAB
    finally:
        with open(FSTAB, "rb") as handle:
            changed = handle.read() != saved
        if changed:
            with open(FSTAB, "wb") as handle:
                handle.write(saved)
        for name in _fstab_backups() - backups:
            os.unlink(name)


@pytest.fixture
def sysctl_file():
    path = f"/etc/sysctl.d/99-zz-serverfix-test-{uuid.uuid4().hex[:8]}.conf"
    try:
        yield path
    finally:
        for name in glob.glob(path + "*") + glob.glob(f"/var/backups/serverfix{path}*"):
            os.unlink(name)


def _pillar(swap_dir, sysctl_file, **swap):
    env = os.path.join(swap_dir, "app.env")
    with open(env, "a", encoding="utf-8"):
        pass
    return {
        "serverfix": {
            "redis": {"enabled": False},
            "remove_processes": [],
            "dotenv": {"file": env},
            "swap": {
                "file": os.path.join(swap_dir, "swapfile"),
                "size": "64M",
                "sysctl_file": sysctl_file,
                "swappiness": 10,
                "vfs_cache_pressure": 50,
                **swap,
            },
        }
    }


def _by_id(result):
    return {state.id: state for state in result}


def test_swap_sls_predicts_applies_and_is_idempotent(
    modules, swap_dir, real_fstab, sysctl_file, sysctl_restore
):
    with open("/proc/sys/vm/swappiness", "w", encoding="ascii") as handle:
        handle.write("61")
    pillar = _pillar(swap_dir, sysctl_file)
    swap_path = pillar["serverfix"]["swap"]["file"]
    with open(FSTAB, "rb") as handle:
        fstab_before = handle.read()

    predicted = _by_id(modules.state.sls("serverfix.swap", pillar=pillar, test=True))
    assert predicted["serverfix-preflight"].result is True, predicted["serverfix-preflight"].comment
    for sid in IDS:
        assert predicted[sid].result is None, (sid, predicted[sid].comment)
    assert predicted[IDS[0]].changes == {
        "file": {"old": None, "new": "64M"},
        "active": {"old": False, "new": True},
        "fstab": {"old": [], "new": [f"{swap_path} none swap sw 0 0"]},
    }
    assert predicted[IDS[1]].changes["vm.swappiness"] == {"old": "61", "new": "10"}
    assert sysctl_file in predicted[IDS[1]].changes
    assert (
        not os.path.exists(swap_path)
        and not os.path.exists(sysctl_file)
        and read_sysctl("vm.swappiness") == "61"
    )
    with open(FSTAB, "rb") as handle:
        assert handle.read() == fstab_before

    real = _by_id(modules.state.sls("serverfix.swap", pillar=pillar))
    for sid in IDS:
        assert real[sid].result is True, (sid, real[sid].comment)
        assert real[sid].changes == predicted[sid].changes
    assert active_swap(swap_path) is not None and read_sysctl("vm.swappiness") == "10"
    with open(FSTAB, encoding="utf-8") as handle:
        assert [line for line in handle.read().splitlines() if line.startswith(swap_path)] == [
            f"{swap_path} none swap sw 0 0"
        ]

    again = _by_id(modules.state.sls("serverfix.swap", pillar=pillar))
    assert all(state.result is True and not state.changes for state in again.values()), again


def test_overcommit_memory_is_persisted_with_the_swap_sysctls(
    modules, swap_dir, real_fstab, sysctl_file, sysctl_restore
):
    """vm.overcommit_memory (default 1: Redis's advice) goes into the same sysctl.d file, now
    and for the boot; '' leaves it alone (not in the file, the kernel's value untouched)."""
    with open("/proc/sys/vm/overcommit_memory", "w", encoding="ascii") as handle:
        handle.write("0")
    pillar = _pillar(swap_dir, sysctl_file)
    assert DEFAULTS["swap"]["overcommit_memory"] == 1
    sid = IDS[1]
    predicted = _by_id(modules.state.sls("serverfix.swap", pillar=pillar, test=True))[sid]
    assert predicted.changes["vm.overcommit_memory"] == {"old": "0", "new": "1"}
    assert read_sysctl("vm.overcommit_memory") == "0"
    real = _by_id(modules.state.sls("serverfix.swap", pillar=pillar))[sid]
    assert real.result is True and real.changes == predicted.changes
    assert read_sysctl("vm.overcommit_memory") == "1"
    with open(sysctl_file, encoding="utf-8") as handle:
        assert "vm.overcommit_memory = 1" in handle.read().splitlines()
    again = _by_id(modules.state.sls("serverfix.swap", pillar=pillar))[sid]
    assert again.result is True and not again.changes

    with open("/proc/sys/vm/overcommit_memory", "w", encoding="ascii") as handle:
        handle.write("0")
    for alone in ("", None):
        pillar = _pillar(swap_dir, sysctl_file, overcommit_memory=alone)
        result = _by_id(modules.state.sls("serverfix.swap", pillar=pillar))[sid]
        assert result.result is True and "vm.overcommit_memory" not in result.changes
        with open(sysctl_file, encoding="utf-8") as handle:
            assert "overcommit" not in handle.read()
        assert read_sysctl("vm.overcommit_memory") == "0"


def test_swap_sls_bad_overcommit_memory_stops_in_preflight(modules, swap_dir, sysctl_file):
    pillar = _pillar(swap_dir, sysctl_file, overcommit_memory=5)
    result = _by_id(modules.state.sls("serverfix.swap", pillar=pillar, test=True))
    assert result["serverfix-preflight"].result is False
    assert "serverfix:swap:overcommit_memory" in result["serverfix-preflight"].comment


def test_swap_sls_disabled_has_no_phase_4_states(modules, swap_dir, sysctl_file):
    pillar = _pillar(swap_dir, sysctl_file, enabled=False)
    ids = set(_by_id(modules.state.sls("serverfix.swap", pillar=pillar, test=True)))
    assert ids == {"serverfix-preflight"}


def test_swap_sls_bad_size_stops_in_preflight(modules, swap_dir, sysctl_file):
    pillar = _pillar(swap_dir, sysctl_file, size="2X")
    result = _by_id(modules.state.sls("serverfix.swap", pillar=pillar))
    assert result["serverfix-preflight"].result is False
    assert "serverfix:swap:size: '2X' is not valid" in result["serverfix-preflight"].comment
    assert os.listdir(swap_dir) == ["app.env"] and not os.path.exists(sysctl_file)


def test_swap_sls_not_enough_disk_stops_in_preflight(modules, swap_dir, sysctl_file):
    pillar = _pillar(swap_dir, sysctl_file, size="999T")
    result = _by_id(modules.state.sls("serverfix.swap", pillar=pillar, test=True))
    assert result["serverfix-preflight"].result is False
    assert "size 999T: not enough disk space" in result["serverfix-preflight"].comment


def test_defaults_are_the_runbooks():
    swap = DEFAULTS["swap"]
    assert (swap["file"], swap["size"], swap["swappiness"], swap["vfs_cache_pressure"]) == (
        "/swapfile",
        "2G",
        10,
        50,
    )
    assert (
        swap["sysctl_file"] > "/etc/sysctl.d/99-sysctl.conf"
    )  # sorts after Debian's link to /etc/sysctl.conf
