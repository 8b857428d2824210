"""
Several replicas side by side (``scripts/replica.sh fleet``: ``hetzner-1`` … ``hetzner-N``, each
with its own name, subnet, cgroups and lxcfs) and a salt-minion in each, joined to a
tests/support/salt_master.HostMaster on the fleet's master address: the master/minion fleet a
Salt admin runs the rollout on (formula/serverfix/orch/rollout.sls).

The minion is Salt from PyPI (the same pin as the host venv, requirements-test.txt) in a venv at
/opt/salt in the guest. It is installed once from wheels built on the host and kept as a tarball
beside the replica image; every later guest gets that venv unpacked into its root file system from
the host side, so N guests need no N pip runs and no index of their own.
"""

import concurrent.futures
import json
import os
import shlex
import time
from pathlib import Path

from tests.support.loader import import_salt_module
from tests.support.paths import FORMULA_ROOT
from tests.support.replica import REPLICA_SH, Replica, run_command, salt_pin, venv_tool

REPLICA_DIR = Path(os.environ.get("REPLICA_DIR", "/var/cache/serverfix/replica"))
WHEELS = REPLICA_DIR / "salt-wheels"
GUEST_VENV = "/opt/salt"


def salt_wheels(say=print):
    """Wheels of the pinned Salt and its dependencies, built once with the host's pip."""
    pin = salt_pin()
    marker = WHEELS / ".pin"
    if not (marker.exists() and marker.read_text(encoding="utf-8") == pin):
        say(f"building wheels for {pin} with the host's pip (once; cached in {WHEELS})")
        tmp = WHEELS.with_name(WHEELS.name + ".tmp")
        run_command(["rm", "-rf", str(tmp), str(WHEELS)], timeout=60)
        run_command([str(venv_tool("pip")), "wheel", "-q", "-w", str(tmp), pin], timeout=900)
        (tmp / ".pin").write_text(pin, encoding="utf-8")
        tmp.rename(WHEELS)
    return pin


def pip_install_minion(member, pin):
    """``pip install`` the pinned Salt into the guest's /opt/salt from the host's wheels."""
    run_command(
        [
            "bash",
            "-c",
            f'tar -C "{WHEELS}" -cf - . | bash "{REPLICA_SH}" ssh '
            f'"rm -rf /var/tmp/salt-wheels && mkdir -p /var/tmp/salt-wheels && '
            "tar -C /var/tmp/salt-wheels -xf - && "
            f"python3 -m venv {GUEST_VENV} && {GUEST_VENV}/bin/pip install -q --no-index "
            f"--find-links /var/tmp/salt-wheels '{pin}' && rm -rf /var/tmp/salt-wheels\"",
        ],
        timeout=900,
        env=member.env,
    )


def install_minion(member, say=print):
    """Salt's minion in the guest's /opt/salt: unpacked from the cached venv, or pip-installed
    (then cached for the next guest). Returns (seconds, how)."""
    started = time.monotonic()
    pin = salt_wheels(say)
    python = member.ssh("python3 -c 'import sys; print(sys.version.split()[0])'", timeout=30)
    cache = REPLICA_DIR / f"salt-minion-venv-{pin.split('==')[-1]}-py{python.stdout.strip()}.tar"
    rootfs = member.facts["REPLICA_ROOTFS"]
    if cache.exists():
        run_command(["tar", "-C", f"{rootfs}/opt", "-xf", str(cache)], timeout=300)
        how = "unpacked from the cached venv"
    else:
        pip_install_minion(member, pin)
        tmp = cache.with_name(cache.name + ".tmp")
        run_command(["tar", "-C", f"{rootfs}/opt", "-cf", str(tmp), "salt"], timeout=300)
        tmp.rename(cache)
        how = f"pip-installed from wheels (now cached in {cache})"
    return time.monotonic() - started, how


def start_minion(member, config):
    """Configure the minion for the master and (re)start it under the guest's systemd."""
    member.ssh(
        "mkdir -p /etc/salt/minion.d && "
        "cat > /etc/salt/minion.d/master.conf && "
        "{ systemctl stop salt-minion; systemctl reset-failed salt-minion; } 2>/dev/null; "
        f"systemd-run --unit=salt-minion {GUEST_VENV}/bin/salt-minion -l warning",
        stdin=json.dumps(config),
        timeout=60,
    )
    # the minion writes its key pair at its first start
    return member.ssh(
        "k=/etc/salt/pki/minion/minion.pub; "
        "for _ in $(seq 150); do test -s $k && break; sleep 0.2; done; cat $k",
        timeout=60,
    ).stdout


class Fleet:
    """``fleet = Fleet(3); fleet.up(); fleet.join(master); ...; fleet.down()``."""

    def __init__(self, size, say=print):
        self.size = size
        self.say = say
        self.members = []
        self.facts = {}

    def script(self, *args, timeout=900, check=True):
        return run_command(["bash", str(REPLICA_SH), "fleet", *args], timeout=timeout, check=check)

    def up(self):
        started = time.monotonic()
        self.script("up", str(self.size))
        self.facts = dict(
            line.split("=", 1) for line in shlex.split(self.script("env").stdout, comments=True)
        )
        self.members = [Replica(name) for name in self.facts["REPLICA_FLEET_NAMES"].split()]
        for member in self.members:
            member.read_facts()
        return time.monotonic() - started

    def down(self):
        self.script("down", timeout=600, check=False)

    @property
    def master_ip(self):
        return self.facts["REPLICA_FLEET_MASTER_IP"]

    @property
    def ids(self):
        return [member.name for member in self.members]

    def by_id(self, minion_id):
        return next(member for member in self.members if member.name == minion_id)

    def each(self, function):
        """``function(member)`` for every member at once: {id: result}."""
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(self.members)) as pool:
            futures = {member.name: pool.submit(function, member) for member in self.members}
            return {name: future.result() for name, future in futures.items()}

    def join(self, master):
        """A salt-minion in every member, its key accepted by ``master`` after comparing it with
        the minion's own, the formula's modules synced to the minions and the master. Returns
        {id: (seconds, how it was installed)}."""
        first, *rest = self.members
        installed = {first.name: install_minion(first, self.say)}  # fills the cache for the rest
        if rest:
            with concurrent.futures.ThreadPoolExecutor(max_workers=len(rest)) as pool:
                for member, result in zip(rest, pool.map(install_minion, rest), strict=True):
                    installed[member.name] = result
        keys = self.each(lambda member: start_minion(member, master.minion_config(member.name)))
        master.accept(keys, wait=False)
        missing = master.not_answering(self.ids, timeout=60)
        if missing:
            # seen once in ~10 joins: a minion that never answered after its key was accepted;
            # its log goes to the terminal, then one restart of it
            for minion_id in missing:
                member = self.by_id(minion_id)
                log = member.ssh("journalctl -u salt-minion --no-pager | tail -15", check=False)
                self.say(
                    f"{minion_id} does not answer; restarting its minion. Its log:\n{log.stdout}"
                )
                start_minion(member, master.minion_config(minion_id))
            missing = master.not_answering(self.ids, timeout=60)
        assert not missing, f"minions not answering: {missing}"
        master.sync_all()
        return installed


ROLLOUT_SLS = "serverfix.orch.rollout"


def rollout(master, timeout=1800, out="json", **settings):
    """``salt-run state.orchestrate serverfix.orch.rollout pillar='{"serverfix": {"rollout":
    {...}}}'`` as an admin types it: (returncode, the orchestrate's JSON (``out="json"``) or its
    text (e.g. ``out="serverfix_rollout"``), seconds)."""
    started = time.monotonic()
    args = (
        "state.orchestrate",
        ROLLOUT_SLS,
        "pillar=" + json.dumps({"serverfix": {"rollout": settings}}),
    )
    if out == "json":
        rc, data, _ = master.run(*args, timeout=timeout)
    else:
        proc = master.text("salt-run", f"--out={out}", *args, timeout=timeout)
        rc, data = proc.returncode, proc.stdout
    return rc, data, time.monotonic() - started


def rollout_summary(data):
    """(``{host: its summary entry}``, the summary as text lines) of a rollout's orchestrate
    return, as the formula's outputter builds them (``result``: fixed / failed / skipped /
    unverified, ``step``, ``changes``, ``state``, ``comment``; unmasked: for assertions)."""
    output = import_salt_module(
        FORMULA_ROOT / "_output" / "serverfix_rollout.py", "serverfix_rollout_fleet"
    )
    summary = output.summarize(output.running_of(data))
    return {entry["host"]: entry for entry in summary["hosts"]}, output.render(summary, str)


# what a rollout may change on a host; the sysctls are left out: every guest shares one kernel
HOST_STATE = ("files", "redis_installed", "swap_active", "pm2", "pm2_saved")


def untouched(before, after):
    """Nothing the formula touches on one host changed between two snapshots."""
    return all(before[key] == after[key] for key in HOST_STATE)
