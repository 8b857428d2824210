"""
Several replicas side by side (``scripts/replica.sh fleet up N``): each member has its own name,
subnet, hostname, 4 GB memory cgroup and lxcfs; every guest reaches the salt-master's address on
the host (``REPLICA_FLEET_MASTER_IP`` on a dummy interface) through its default route, also with a
strict rp_filter; the host's sysctls, which the guests share (one kernel), come back only when the
last member goes down, a reboot of one guest does not reset them while the others are up, and a
killed member does not block the restore; ``down`` of one member leaves the others answering; and
``fleet down`` leaves nothing behind on the host.

The steps build on each other (STEPS_IN_ORDER): one fleet of three for the module.
"""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.host import processes_naming
from tests.support.replica import REPLICA_SH, Replica, run_command

pytestmark = [pytest.mark.e2e, pytest.mark.destructive_test]

STEPS_IN_ORDER = True
SIZE = 3
PREFIX = "sffleet"  # not the default ``hetzner``: never someone else's fleet
SUBNET_BASE = 40  # members on 10.231.41.2, .42.2, .43.2
NAMES = [f"{PREFIX}-{i}" for i in range(1, SIZE + 1)]
FLEET_ENV = {"REPLICA_FLEET": PREFIX, "REPLICA_FLEET_SUBNET_BASE": str(SUBNET_BASE)}
SYSCTLS = ("vm.swappiness", "vm.vfs_cache_pressure", "vm.overcommit_memory", "net.ipv4.ip_forward")


def script_env(**extra):
    """This process's environment for replica.sh, without another replica's name or subnet."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPLICA_")}
    return dict(env, **FLEET_ENV, **extra)


def replica_sh(*args, env=None, timeout=600, check=True):
    return run_command(
        ["bash", str(REPLICA_SH), *args], timeout=timeout, check=check, env=env or script_env()
    )


def parse_env(text):
    """``KEY=value`` / ``KEY="a b"`` lines of ``replica.sh env`` / ``fleet env``."""
    return {k: v.strip('"') for k, _, v in (line.partition("=") for line in text.splitlines())}


def Member(name):  # pylint: disable=invalid-name
    """One fleet member: tests/support/replica.Replica with REPLICA_NAME set and no other
    replica's knobs (its subnet comes from its run dir)."""
    member = Replica(name)
    member.env = script_env(REPLICA_NAME=name)
    member.read_facts()
    return member


def app_mode(member, timeout=60):
    """The app's mode once it answers (pm2 starts it at boot: slower with three booting at once)."""
    deadline = time.monotonic() + timeout
    while (mode := member.app_mode()) is None and time.monotonic() < deadline:
        time.sleep(0.5)
    return mode


def host_sysctls():
    return {
        key: Path("/proc/sys", key.replace(".", "/")).read_text(encoding="ascii").strip()
        for key in SYSCTLS
    }


def host_swaps():
    with open("/proc/swaps", encoding="utf-8") as handle:
        return sorted(line.split()[0] for line in handle.readlines()[1:])


def meminfo_kb(text):
    return {line.split(":")[0]: int(line.split()[1]) for line in text.splitlines() if line.strip()}


@pytest.fixture(scope="module")
def fleet(progress):
    """``fleet up 3`` (and ``fleet down`` at the end, whatever the steps did)."""
    if os.geteuid() != 0:
        pytest.skip("the replicas need root (systemd-nspawn, loop mounts, nftables)")
    before = {"sysctl": host_sysctls(), "run_lxcfs": os.path.exists("/run/lxcfs")}
    started = time.monotonic()
    try:  # a member that failed to boot: the others go down too
        replica_sh("fleet", "up", str(SIZE), timeout=900)
        seconds = time.monotonic() - started
        progress(f"fleet up {SIZE} in {seconds:.1f} s")
        info = parse_env(replica_sh("fleet", "env").stdout)
        members = {name: Member(name) for name in NAMES}
        yield {"before": before, "env": info, "members": members}
    finally:
        replica_sh("fleet", "down", timeout=600, check=False)


def test_fleet_env_names_the_members_and_the_master(fleet):
    info = fleet["env"]
    assert info["REPLICA_FLEET_NAMES"] == " ".join(NAMES), info
    assert info["REPLICA_FLEET_MASTER_IP"] == "10.231.0.1", info
    assert info["REPLICA_FLEET_IPS"].split() == [f"10.231.{SUBNET_BASE + i}.2" for i in (1, 2, 3)]
    assert replica_sh("fleet", "status", check=False).returncode == 0


def test_each_member_answers_with_its_own_ip_and_hostname(fleet):
    """``env`` of a member needs only REPLICA_NAME: the subnet comes from its run dir."""
    for i, (name, member) in enumerate(fleet["members"].items(), start=1):
        ip = f"10.231.{SUBNET_BASE + i}.2"
        assert member.facts["REPLICA_IP"] == ip and member.facts["REPLICA_UP"] == "1", member.facts
        out = member.ssh("hostname; ip -4 -o addr show host0; systemctl is-system-running", 60)
        lines = out.stdout.splitlines()
        assert lines[0] == name and f"{ip}/30" in lines[1] and lines[2] == "running", lines
        assert app_mode(member) == "fallback"  # its app (pm2 at boot), over its own veth


def test_each_member_has_its_own_4g_cgroup_and_lxcfs(fleet):
    members = list(fleet["members"].values())
    cgroups = {m.facts["REPLICA_MEMORY_CGROUP"] for m in members}
    lxcfs = {m.facts["REPLICA_LXCFS"] for m in members}
    assert len(cgroups) == SIZE and len(lxcfs) == SIZE, (cgroups, lxcfs)
    for member in members:
        limit = Path(member.facts["REPLICA_MEMORY_CGROUP"])
        limit = limit / ("memory.limit_in_bytes" if "/memory/" in str(limit) else "memory.max")
        assert limit.read_text(encoding="ascii").strip() == str(4 << 30), limit
        guest = meminfo_kb(member.ssh("cat /proc/meminfo", timeout=30).stdout)
        assert guest["MemTotal"] == 4 << 20, (member.name, guest["MemTotal"])


def test_every_guest_reaches_the_master_address_from_its_own_ip(fleet):
    """A listener on the host's master address; each guest connects with bash's /dev/tcp, with
    rp_filter strict on its veth (the host's own setting may be loose: the veth's value is the
    stricter one and goes with the veth). The peer is the guest's own address: no NAT."""
    master = fleet["env"]["REPLICA_FLEET_MASTER_IP"]
    with socket.socket() as server:
        server.bind((master, 0))
        server.listen(SIZE)
        server.settimeout(20)
        port = server.getsockname()[1]
        for member in fleet["members"].values():
            veth = "sfrep" + member.facts["REPLICA_IP"].split(".")[2]
            Path(f"/proc/sys/net/ipv4/conf/{veth}/rp_filter").write_text("1", encoding="ascii")
            out = member.ssh(
                f"timeout 10 bash -c 'exec 3<>/dev/tcp/{master}/{port} && echo reached'",
                timeout=30,
                check=False,
            )
            assert out.stdout.strip() == "reached", (member.name, out.stdout, out.stderr)
            conn, peer = server.accept()
            conn.close()
            assert peer[0] == member.facts["REPLICA_IP"], (member.name, peer)


def test_a_subnet_in_use_is_refused_naming_its_replica(fleet):
    env = script_env(REPLICA_NAME="sffleet-intruder", REPLICA_SUBNET=str(SUBNET_BASE + 2))
    out = replica_sh("up", env=env, check=False, timeout=120)
    assert out.returncode == 1, out
    assert f"subnet {SUBNET_BASE + 2} " in out.stderr and f"replica {NAMES[1]}" in out.stderr
    assert not os.path.exists(parse_env(replica_sh("env", env=env).stdout)["REPLICA_RUN"])
    assert fleet["members"][NAMES[1]].ssh("hostname", timeout=30).stdout.strip() == NAMES[1]


def test_a_second_up_of_the_same_name_is_refused_while_the_first_runs(fleet):
    """Per-name lock: a replica of another name boots beside the fleet; a second ``up`` of that
    name while its first ``up`` still runs is refused (REPLICA_LOCK_WAIT=0)."""
    env = script_env(REPLICA_NAME="sffleet-solo", REPLICA_SUBNET="49", REPLICA_LOCK_WAIT="0")
    run = Path(parse_env(replica_sh("env", env=env).stdout)["REPLICA_RUN"])
    with subprocess.Popen(
        ["bash", str(REPLICA_SH), "up"], env=env, stderr=subprocess.PIPE, text=True
    ) as first:
        try:
            deadline = time.monotonic() + 60
            while not (run / "up.pid").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            second = replica_sh("up", env=env, check=False, timeout=120)
            assert second.returncode == 1, second
            assert "replica sffleet-solo is being started" in second.stderr, second.stderr
            assert first.wait(timeout=120) == 0, first.stderr.read()
            out = replica_sh("ssh", "hostname", env=env, timeout=30).stdout.strip()
            assert out == "sffleet-solo"
        finally:
            replica_sh("down", env=env, timeout=300, check=False)
    assert not run.exists()
    for name in NAMES:  # the fleet untouched
        assert fleet["members"][name].ssh("hostname", timeout=30).stdout.strip() == name


def test_the_host_sysctls_come_back_only_with_the_last_member(fleet, progress):
    """One kernel: a value set in one guest is the host's. A reboot of that guest does not reset it
    while the others are up, nor does ``down`` of it; ``down`` of one swaps off only its own swap
    file; a member killed meanwhile (its boot loop gone) does not keep the last live member's
    ``down`` from restoring the host's value."""
    members = fleet["members"]
    first, second, third = (members[name] for name in NAMES)
    before = fleet["before"]["sysctl"]
    swappiness = "18" if before["vm.swappiness"] == "17" else "17"
    for member in members.values():  # each its own path: /proc/swaps shows the guest's name
        member.ssh(
            f"fallocate -l 32M /swapfile-{member.name} && chmod 600 /swapfile-{member.name} && "
            f"mkswap -q /swapfile-{member.name} && swapon /swapfile-{member.name}",
            timeout=60,
        )
    first.ssh(f"sysctl -qw vm.swappiness={swappiness}", timeout=30)
    assert host_sysctls()["vm.swappiness"] == swappiness
    assert {f"/swapfile-{name}" for name in NAMES} <= set(host_swaps())

    progress(f"reboot {first.name} (the others up)")
    first.reboot()
    assert host_sysctls()["vm.swappiness"] == swappiness  # not reset: the others are up
    assert f"/swapfile-{first.name}" not in host_swaps()  # its swap: off, as at a VM's reboot

    first.down()
    assert host_sysctls()["vm.swappiness"] == swappiness
    assert first.script("status", check=False).returncode == 3
    for member in (second, third):
        assert member.ssh("hostname", timeout=30).stdout.strip() == member.name
        assert f"/swapfile-{member.name}" in host_swaps()

    # a killed run: the boot loop of the second member gone (its guest still runs)
    os.kill(
        int(Path(second.facts["REPLICA_RUN"], "boot.pid").read_text(encoding="ascii").strip()),
        signal.SIGKILL,
    )
    time.sleep(0.5)
    third.down()  # the last live member
    assert host_sysctls() == before, "the killed member blocked the restore"
    assert f"/swapfile-{third.name}" not in host_swaps()
    assert f"/swapfile-{second.name}" in host_swaps()  # the killed run's: until its own down


def test_fleet_down_leaves_nothing_behind(fleet):
    runs = [m.facts["REPLICA_RUN"] for m in fleet["members"].values()]
    cgroups = [m.facts["REPLICA_MEMORY_CGROUP"] for m in fleet["members"].values()]
    replica_sh("fleet", "down", timeout=600)
    with open("/proc/mounts", encoding="utf-8") as handle:
        mounts = [line.split()[1] for line in handle if line.split()[1].startswith(tuple(runs))]
    tables = run_command(["nft", "list", "tables"], timeout=30).stdout
    left = {
        "mounts": mounts,
        "veths": [
            f"sfrep{SUBNET_BASE + i}"
            for i in range(1, SIZE + 1)
            if Path("/sys/class/net", f"sfrep{SUBNET_BASE + i}").exists()
        ],
        "master_if": Path("/sys/class/net", fleet["env"]["REPLICA_FLEET_MASTER_IF"]).exists(),
        "nft": [name for name in NAMES if f"serverfix-{name}" in tables],
        "cgroups": [str(p) for p in Path("/sys/fs/cgroup").glob(f"*/serverfix-{PREFIX}-*")]
        + [c for c in cgroups if os.path.isdir(c)],
        "processes": [p for run in runs for p in processes_naming(run)],
        "run_dirs": [run for run in runs if os.path.exists(run)],
        "swaps": [s for s in host_swaps() if s.startswith(f"/swapfile-{PREFIX}")],
    }
    assert left == {k: False if k == "master_if" else [] for k in left}, left
    assert os.path.exists("/run/lxcfs") == fleet["before"]["run_lxcfs"]
    assert host_sysctls() == fleet["before"]["sysctl"]
    assert parse_env(replica_sh("fleet", "env").stdout)["REPLICA_FLEET_NAMES"] == ""
    assert replica_sh("fleet", "status", check=False).returncode == 3
