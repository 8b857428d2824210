"""
The replica host itself (scripts/replica.sh): it boots with systemd as PID 1 in its own network
namespace, its swap and sysctls reach the host kernel (they are kernel-wide) and ``down`` leaves
nothing behind on the host: no swap, the sysctls as they were, no mount, loop device, veth, NAT
table or cgroup, no run directory, and the lock free for the next replica.
"""

import os
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.destructive_test]

SYSCTLS = (
    "vm.swappiness",
    "vm.vfs_cache_pressure",
    "net.ipv4.ip_forward",
    "kernel.pid_max",
    "fs.protected_regular",
)


def host_sysctls():
    return {
        key: Path("/proc/sys", key.replace(".", "/")).read_text(encoding="ascii").strip()
        for key in SYSCTLS
    }


def host_traces(facts):
    """What a replica leaves on the host while it runs."""
    run = facts["REPLICA_RUN"]
    with open("/proc/mounts", encoding="utf-8") as handle:
        mounts = [line.split()[1] for line in handle if line.split()[1].startswith(run)]
    loops = [
        p.name
        for p in Path("/sys/block").glob("loop*")
        if (p / "loop" / "backing_file").exists()
        and (p / "loop" / "backing_file").read_text(encoding="utf-8").startswith(run)
    ]
    cgroups = [str(p) for p in Path("/sys/fs/cgroup").glob("*/serverfix-" + facts["REPLICA_NAME"])]
    veth = Path("/sys/class/net", "sfrep" + facts["REPLICA_IP"].split(".")[2]).exists()
    return {
        "mounts": mounts,
        "loops": loops,
        "cgroups": cgroups,
        "veth": veth,
        "run_dir": os.path.exists(run),
    }


def host_swaps():
    with open("/proc/swaps", encoding="utf-8") as handle:
        return sorted(line.split()[0] for line in handle.readlines()[1:])


@pytest.fixture(scope="module")
def host_before():
    """The host before the replica boots (requested before ``replica``)."""
    return {"sysctl": host_sysctls()}


def test_boots_systemd_in_its_own_network(host_before, replica):
    out = replica.ssh(
        "ps -o comm= -p 1; systemctl is-system-running; ip -4 -o addr show host0; "
        "pm2 jlist >/dev/null && echo pm2-ok; node --version; systemctl is-enabled pm2-root",
        timeout=60,
    )
    lines = out.stdout.split("\n")
    assert lines[0] == "systemd" and lines[1] == "running", out.stdout
    assert replica.ip in lines[2] and "pm2-ok" in lines and lines[-2] == "enabled", out.stdout
    assert replica.app_mode() == "fallback"  # the host reaches the app through the veth


def test_swap_and_sysctls_reach_the_host_and_survive_a_reboot(replica):
    replica.ssh(
        "fallocate -l 64M /swapfile && chmod 600 /swapfile && mkswap -q /swapfile && "
        "swapon /swapfile && sysctl -qw vm.swappiness=13",
        timeout=60,
    )
    # the host sees the guest's swap under the guest's name: its mount is not in the host's tree
    assert host_sysctls()["vm.swappiness"] == "13" and "/swapfile" in host_swaps()
    replica.reboot()  # the guest's swap outlives its shutdown: the boot loop swaps it off
    assert "/swapfile" not in host_swaps()
    replica.ssh("swapon /swapfile", timeout=60)
    assert "/swapfile" in host_swaps()


def test_down_leaves_nothing_behind(host_before, replica):
    facts = dict(replica.facts)
    assert host_traces(facts)["mounts"] and host_traces(facts)["veth"]
    replica.down()
    assert host_traces(facts) == {
        "mounts": [],
        "loops": [],
        "cgroups": [],
        "veth": False,
        "run_dir": False,
    }
    assert "/swapfile" not in host_swaps()
    assert host_sysctls() == host_before["sysctl"]  # also what the guest's own sysctl.d set at boot
    assert replica.script("status", check=False).returncode == 3  # down
    # the lock is free: a second replica may start (and is torn down by the fixture)
    replica.up()
