"""
The replica host itself (scripts/replica.sh): it boots with systemd as PID 1 in its own network
namespace, with the server's RAM (a memory cgroup limit, and lxcfs's /proc/meminfo showing it), its
swap and sysctls reach the host kernel (they are kernel-wide), a reboot resets them as a VM's would
and brings back what /etc/fstab and /etc/sysctl.d say, and ``down`` leaves nothing behind on the
host: no swap, the sysctls as they were, no mount, loop device, veth, NAT table or cgroup, no
process (nspawn, lxcfs), no run directory, and the lock free for the next replica.
"""

import os
from pathlib import Path

import pytest

from tests.support.host import processes_naming

pytestmark = [pytest.mark.e2e, pytest.mark.destructive_test]

SYSCTLS = (
    "vm.swappiness",
    "vm.vfs_cache_pressure",
    "vm.overcommit_memory",
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
    if facts.get("REPLICA_MEMORY_CGROUP"):  # below the memory cgroup `up` ran in, not at the root
        cgroups += [facts["REPLICA_MEMORY_CGROUP"]] * os.path.isdir(facts["REPLICA_MEMORY_CGROUP"])
    veth = Path("/sys/class/net", "sfrep" + facts["REPLICA_IP"].split(".")[2]).exists()
    return {
        "mounts": mounts,
        "loops": loops,
        "cgroups": cgroups,
        "veth": veth,
        "processes": processes_naming(run),
        "run_dir": os.path.exists(run),
    }


def meminfo_kb(text):
    return {line.split(":")[0]: int(line.split()[1]) for line in text.splitlines() if line.strip()}


def host_swaps():
    with open("/proc/swaps", encoding="utf-8") as handle:
        return sorted(line.split()[0] for line in handle.readlines()[1:])


@pytest.fixture(scope="module")
def host_before():
    """The host before the replica boots (requested before ``replica``)."""
    return {"sysctl": host_sysctls(), "run_lxcfs": os.path.exists("/run/lxcfs")}


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


def test_the_guest_has_the_servers_memory(replica):
    """REPLICA_MEMORY (default 4G, the runbook's server): the cgroup limit and /proc/meminfo."""
    if replica.facts["REPLICA_MEMORY"] != "4G":
        pytest.skip(
            f"REPLICA_MEMORY={replica.facts['REPLICA_MEMORY']}: this test checks the default"
        )
    limit = Path(replica.facts["REPLICA_MEMORY_CGROUP"])
    limit = limit / ("memory.limit_in_bytes" if "/memory/" in str(limit) else "memory.max")
    assert limit.read_text(encoding="ascii").strip() == str(4 << 30)
    with open("/proc/meminfo", encoding="ascii") as handle:
        host = meminfo_kb(handle.read())
    guest = meminfo_kb(replica.ssh("cat /proc/meminfo", timeout=30).stdout)
    assert guest["MemTotal"] == 4 << 20 and host["MemTotal"] > 4 << 20, (guest, host)
    assert 0 < guest["MemAvailable"] <= guest["MemTotal"], guest
    # what the guest's tools and Salt read: free(1) and the mem_total grain go by /proc/meminfo
    assert replica.ssh("free -m", timeout=30).stdout.split("\n")[1].split()[1] == "4096"
    # /proc/swaps stays the kernel's (lxcfs would show one "none virtual" line instead)
    assert "virtual" not in replica.ssh("cat /proc/swaps", timeout=30).stdout
    # and the limit holds across a reboot: the next boot gets it too (the boot loop carries it)
    replica.reboot()
    guest = meminfo_kb(replica.ssh("cat /proc/meminfo", timeout=30).stdout)
    assert guest["MemTotal"] == 4 << 20, guest


def test_a_reboot_brings_back_fstab_swap_and_persisted_sysctls_only(replica):
    """As on the VM: after a reboot /swapfile is on because /etc/fstab says so (the replica's
    swapon --all at boot), the sysctl.d values are back because systemd-sysctl set them again
    (the boot loop reset the host kernel's values between the boots), and a value set only by
    hand is gone."""
    before = host_sysctls()
    swappiness = "18" if before["vm.swappiness"] == "17" else "17"  # values the host does not have
    pressure = "78" if before["vm.vfs_cache_pressure"] == "77" else "77"
    replica.ssh(
        "fallocate -l 64M /swapfile && chmod 600 /swapfile && mkswap -q /swapfile && "
        "swapon /swapfile && echo '/swapfile none swap sw 0 0' >> /etc/fstab && "
        f"printf 'vm.swappiness = {swappiness}\\nvm.overcommit_memory = 1\\n' "
        "> /etc/sysctl.d/99-zz-test.conf && sysctl -q -p /etc/sysctl.d/99-zz-test.conf && "
        f"sysctl -qw vm.vfs_cache_pressure={pressure}",
        timeout=60,
    )
    assert host_sysctls()["vm.vfs_cache_pressure"] == pressure
    replica.reboot()
    after = host_sysctls()
    assert after["vm.swappiness"] == swappiness and after["vm.overcommit_memory"] == "1", after
    assert after["vm.vfs_cache_pressure"] == before["vm.vfs_cache_pressure"]  # by hand: reset
    assert "/swapfile" in host_swaps()
    unit = "replica-swap.service"
    out = replica.ssh(
        f"systemctl is-active {unit}; journalctl -b -q -o cat -u {unit}; cat /proc/swaps",
        timeout=30,
    ).stdout.splitlines()
    assert out[0] == "active" and "swapon /swapfile" in out, out  # switched on at this boot
    assert any(line.split()[:1] == ["/swapfile"] for line in out), out  # the guest sees it
    # undo for the next test: no swap, no fstab line, no sysctl file
    replica.ssh(
        "swapoff /swapfile && sed -i '/^\\/swapfile /d' /etc/fstab && rm /swapfile "
        "/etc/sysctl.d/99-zz-test.conf",
        timeout=60,
    )


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
        "processes": [],
        "run_dir": False,
    }
    assert os.path.exists("/run/lxcfs") == host_before["run_lxcfs"]
    assert "/swapfile" not in host_swaps()
    assert host_sysctls() == host_before["sysctl"]  # also what the guest's own sysctl.d set at boot
    assert replica.script("status", check=False).returncode == 3  # down
    # the lock is free: a second replica may start (and is torn down by the fixture)
    replica.up()
