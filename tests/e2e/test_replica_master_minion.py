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

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.support.host import free_port
from tests.support.paths import FORMULA_ROOT
from tests.support.replica import (
    HEALTH_URL_IN_GUEST,
    REPLICA_SH,
    RESTART_FLAG,
    ROSTER_ID,
    StateRun,
    run_command,
    salt_pin,
    venv_tool,
)

pytestmark = [pytest.mark.e2e, pytest.mark.destructive_test]

STEPS_IN_ORDER = True
WHEELS = Path(os.environ.get("REPLICA_DIR", "/var/cache/serverfix/replica")) / "salt-wheels"
GUEST_VENV = "/opt/salt"


def port_open(address, port):
    try:
        with socket.create_connection((address, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def entry(e2e_report):
    return e2e_report.setdefault("steps", {}).setdefault("master_minion", {"lines": []})


@pytest.fixture(scope="module")
def salt_wheels(progress, entry):
    """Wheels of the pinned Salt and its dependencies, built once with the host's pip."""
    pin = salt_pin()
    marker = WHEELS / ".pin"
    if not (marker.exists() and marker.read_text(encoding="utf-8") == pin):
        progress(f"building wheels for {pin} with the host's pip (once; cached in {WHEELS})")
        started = time.monotonic()
        tmp = WHEELS.with_name(WHEELS.name + ".tmp")
        run_command(["rm", "-rf", str(tmp), str(WHEELS)], timeout=60)
        run_command([str(venv_tool("pip")), "wheel", "-q", "-w", str(tmp), pin], timeout=900)
        (tmp / ".pin").write_text(pin, encoding="utf-8")
        tmp.rename(WHEELS)
        entry["wheels_seconds"] = round(time.monotonic() - started, 1)
    return pin


@pytest.fixture(scope="module")
def master(replica, tmp_path_factory, progress):
    """A salt-master on the host, bound to the host end of the replica's veth only."""
    conf = tmp_path_factory.mktemp("mm")
    address = replica.facts["REPLICA_HOST_IP"]
    ports = {"ret_port": free_port(address), "publish_port": free_port(address)}
    pillar = conf / "pillar"
    pillar.mkdir()
    (pillar / "top.sls").write_text("base:\n  '*':\n    - serverfix\n", encoding="utf-8")
    (pillar / "serverfix.sls").write_text(
        yaml.safe_dump({"serverfix": {"verify": {"url": HEALTH_URL_IN_GUEST}}}), encoding="utf-8"
    )
    (conf / "master").write_text(
        yaml.safe_dump(
            {
                "interface": address,
                **ports,
                "root_dir": str(conf),  # salt puts the paths below under root_dir
                "pki_dir": "pki",
                "cachedir": "cache",
                "sock_dir": "sock",
                "pidfile": "master.pid",
                "log_file": "master.log",
                "key_logfile": "key.log",
                "file_roots": {"base": [str(FORMULA_ROOT)]},
                "pillar_roots": {"base": [str(pillar)]},
                "user": "root",
            }
        ),
        encoding="utf-8",
    )
    progress(f"starting salt-master on {address}:{ports['ret_port']}/{ports['publish_port']}")
    log = open(conf / "master.out", "wb")  # pylint: disable=consider-using-with
    proc = subprocess.Popen(
        [str(venv_tool("salt-master")), "-c", str(conf), "-l", "warning"],  # pylint: disable=consider-using-with
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        end = time.monotonic() + 60
        while not port_open(address, ports["ret_port"]):
            assert proc.poll() is None and time.monotonic() < end, (conf / "master.out").read_text(
                errors="replace"
            )
            time.sleep(0.3)
        yield {"conf": conf, "address": address, **ports}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


def salt(master, *args, timeout=900):
    """``salt hetzner <args>`` against the test master: (returncode, the minion's data)."""
    proc = run_command(
        [
            str(venv_tool("salt")),
            "-c",
            str(master["conf"]),
            "--out=json",
            "--static",
            "--no-color",
            "-t",
            str(timeout),
            ROSTER_ID,
            *args,
        ],
        timeout=timeout + 60,
        check=False,
    )
    try:
        data = json.loads(proc.stdout)[ROSTER_ID]
    except (ValueError, KeyError) as exc:
        raise AssertionError(
            f"salt {' '.join(args)}: no answer from {ROSTER_ID} (rc {proc.returncode})\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        ) from exc
    return proc.returncode, data


def salt_key(master, *args):
    return run_command([str(venv_tool("salt-key")), "-c", str(master["conf"]), *args], timeout=60)


def test_minion_installed_and_key_accepted(replica, salt_wheels, master, entry, progress):
    started = time.monotonic()
    progress(f"installing {salt_wheels} into {GUEST_VENV} in the replica (from the host's wheels)")
    run_command(
        [
            "bash",
            "-c",
            f'tar -C "{WHEELS}" -cf - . | bash "{REPLICA_SH}" ssh '
            f'"rm -rf /var/tmp/salt-wheels && mkdir -p /var/tmp/salt-wheels && '
            "tar -C /var/tmp/salt-wheels -xf - && "
            f"python3 -m venv {GUEST_VENV} && {GUEST_VENV}/bin/pip install -q --no-index "
            f"--find-links /var/tmp/salt-wheels '{salt_wheels}' && rm -rf /var/tmp/salt-wheels\"",
        ],
        timeout=900,
    )
    entry["minion_install_seconds"] = round(time.monotonic() - started, 1)
    config = {
        "master": master["address"],
        "master_port": master["ret_port"],
        "publish_port": master["publish_port"],
        "id": ROSTER_ID,
    }
    replica.ssh(
        "mkdir -p /etc/salt/minion.d && "
        f"echo '{json.dumps(config)}' > /etc/salt/minion.d/master.conf && "
        f"systemd-run --unit=salt-minion {GUEST_VENV}/bin/salt-minion -l warning",
        timeout=60,
    )
    progress("waiting for the minion's key; comparing it with the minion's own before accepting it")
    end = time.monotonic() + 120
    while True:
        pending = json.loads(salt_key(master, "--list=pre", "--out=json").stdout).get(
            "minions_pre", []
        )
        if ROSTER_ID in pending:
            break
        assert time.monotonic() < end, f"no key from {ROSTER_ID}: {pending}"
        time.sleep(1)
    # the key itself, not `salt-key -f` against `salt-call key.finger`: in Salt 3008.4 the master
    # hashes the whole PEM and the minion only its body, so those two fingerprints never match
    on_master = json.loads(salt_key(master, "-p", ROSTER_ID, "--out=json").stdout)["minions_pre"][
        ROSTER_ID
    ]
    on_minion = replica.ssh("cat /etc/salt/pki/minion/minion.pub", timeout=30).stdout
    assert on_master.strip() == on_minion.strip()
    salt_key(master, "-y", "-a", ROSTER_ID)
    end = time.monotonic() + 120
    while True:
        proc = run_command(
            [
                str(venv_tool("salt")),
                "-c",
                str(master["conf"]),
                "--out=json",
                "--static",
                "-t",
                "10",
                ROSTER_ID,
                "test.ping",
            ],
            timeout=60,
            check=False,
        )
        if proc.returncode == 0 and json.loads(proc.stdout or "{}").get(ROSTER_ID) is True:
            break
        assert time.monotonic() < end, proc.stdout + proc.stderr
        time.sleep(1)
    entry["lines"].append(
        f"minion {salt_wheels} installed in {entry['minion_install_seconds']} s; "
        f"its key matched the pending one and was accepted"
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
