"""
A real salt-master on the host (the host venv's Salt), for the e2e tests and tools that drive
replicas through master/minion: its own config dir, bound to one host address only, the formula as
its file root, a pillar per minion id, and the ``salt``/``salt-run``/``salt-key`` commands a Salt
admin types, with JSON out. Minions are installed into replicas by tests/support/fleet.py.
"""

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import yaml

from tests.support.host import free_port
from tests.support.paths import FORMULA_ROOT
from tests.support.replica import run_command, venv_tool


def port_open(address, port):
    try:
        with socket.create_connection((address, port), timeout=1):
            return True
    except OSError:
        return False


class HostMaster:
    """``with HostMaster(dir, address, pillar_by_id) as master: master.salt("hetzner-1", ...)``.

    ``pillar_by_id``: ``{minion_id: {"serverfix": {...}}}``; each id gets its own pillar SLS (what
    an admin's pillar top file does for per-host settings such as a Redis password)."""

    def __init__(self, workdir, address, pillar_by_id, extra_roots=()):
        self.conf = Path(workdir)
        self.address = address
        self.ports = {"ret_port": free_port(address), "publish_port": free_port(address)}
        self.proc = None
        self._log = None
        self.write_pillar(pillar_by_id)
        (self.conf / "master").write_text(
            yaml.safe_dump(
                {
                    "interface": address,
                    **self.ports,
                    "root_dir": str(self.conf),  # salt puts the paths below under root_dir
                    "pki_dir": "pki",
                    "cachedir": "cache",
                    "sock_dir": "sock",
                    "pidfile": "master.pid",
                    "log_file": "master.log",
                    "key_logfile": "key.log",
                    "file_roots": {"base": [str(FORMULA_ROOT), *map(str, extra_roots)]},
                    "pillar_roots": {"base": [str(self.conf / "pillar")]},
                    "user": "root",
                }
            ),
            encoding="utf-8",
        )

    def write_pillar(self, pillar_by_id):
        """One pillar SLS per minion id (``host_<id>.sls``) and the top file that maps them."""
        pillar = self.conf / "pillar"
        pillar.mkdir(parents=True, exist_ok=True)
        top = {}
        for minion_id, data in pillar_by_id.items():
            name = "host_" + minion_id.replace("-", "_").replace(".", "_")
            (pillar / f"{name}.sls").write_text(yaml.safe_dump(data), encoding="utf-8")
            top[minion_id] = [name]
        (pillar / "top.sls").write_text(yaml.safe_dump({"base": top}), encoding="utf-8")

    def minion_config(self, minion_id):
        """What a minion needs to find this master."""
        return {
            "master": self.address,
            "master_port": self.ports["ret_port"],
            "publish_port": self.ports["publish_port"],
            "id": minion_id,
            # retry the key exchange every second, not every 10 s, once the key is accepted
            "acceptance_wait_time": 1,
            "acceptance_wait_time_max": 1,
        }

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        self._log = open(self.conf / "master.out", "wb")  # pylint: disable=consider-using-with
        self.proc = subprocess.Popen(  # pylint: disable=consider-using-with
            [str(venv_tool("salt-master")), "-c", str(self.conf), "-l", "warning"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        end = time.monotonic() + 60
        while not port_open(self.address, self.ports["ret_port"]):
            if self.proc.poll() is not None or time.monotonic() > end:
                self.stop()
                raise AssertionError((self.conf / "master.out").read_text(errors="replace"))
            time.sleep(0.3)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    # --- the admin's commands --------------------------------------------------------------------
    def command(self, tool, *args, timeout=900):
        """``<tool> -c <conf> --out=json <args>``: (returncode, the JSON it printed, stdout)."""
        proc = run_command(
            [str(venv_tool(tool)), "-c", str(self.conf), "--out=json", "--no-color", *args],
            timeout=timeout + 60,
            check=False,
        )
        try:
            data = json.loads(proc.stdout) if proc.stdout.strip() else {}
        except ValueError:
            data = None
        if data is None:
            raise AssertionError(
                f"{tool} {' '.join(args)}: no JSON (rc {proc.returncode})\n"
                f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
        return proc.returncode, data, proc.stdout

    def text(self, tool, *args, timeout=900):
        """``<tool> -c <conf> --no-color <args>`` as the admin sees it (the process)."""
        return run_command(
            [str(venv_tool(tool)), "-c", str(self.conf), "--no-color", *args],
            timeout=timeout + 60,
            check=False,
        )

    def salt(self, target, *args, tgt_type="glob", timeout=900):
        """``salt <target> <args>``: (returncode, {minion id: its data})."""
        flag = {"glob": [], "list": ["-L"], "compound": ["-C"]}[tgt_type]
        rc, data, _ = self.command(
            "salt", "--static", "-t", str(timeout), *flag, target, *args, timeout=timeout
        )
        return rc, data

    def run(self, *args, timeout=1800):
        """``salt-run <args>`` (e.g. state.orchestrate): (returncode, its data, stdout)."""
        return self.command("salt-run", *args, timeout=timeout)

    def sync_all(self, target="*"):
        """The formula's custom modules to the minions (``salt <target> saltutil.sync_all``) and
        to the master itself (``salt-run saltutil.sync_all``: the outputters, utils)."""
        rc, synced = self.salt(target, "saltutil.sync_all")
        assert rc == 0 and synced and all(isinstance(v, dict) for v in synced.values()), synced
        rc, ran, _ = self.run("saltutil.sync_all")
        assert rc == 0, ran

    def key(self, *args):
        return self.command("salt-key", *args, timeout=60)[1]

    def accept(self, public_keys, timeout=120, wait=True):
        """Accept each minion's key once it is pending and equal to the minion's own public key
        (``{minion_id: PEM}``, read from the minion itself: no trust on first use); ``wait``:
        until each answers a ping."""
        end = time.monotonic() + timeout
        while True:
            pending = self.key("--list=pre").get("minions_pre", [])
            if all(minion_id in pending for minion_id in public_keys):
                break
            assert time.monotonic() < end, f"no pending key from {set(public_keys) - set(pending)}"
            time.sleep(1)
        for minion_id, pem in public_keys.items():
            # the key itself, not `salt-key -f` against `salt-call key.finger`: in Salt 3008.4 the
            # master hashes the whole PEM and the minion only its body, so those never match
            on_master = self.key("-p", minion_id)["minions_pre"][minion_id]
            assert on_master.strip() == pem.strip(), f"{minion_id}: pending key is not its own"
            run_command(  # prints text, not JSON
                [str(venv_tool("salt-key")), "-c", str(self.conf), "-y", "-a", minion_id],
                timeout=60,
            )
        if wait:
            missing = self.not_answering(sorted(public_keys), timeout=timeout)
            assert not missing, f"minions not answering: {missing}"

    def not_answering(self, minion_ids, timeout=120):
        """The ids of ``minion_ids`` that still do not answer ``test.ping`` after ``timeout``."""
        end = time.monotonic() + timeout
        while True:
            _, data = self.salt(",".join(minion_ids), "test.ping", tgt_type="list", timeout=10)
            missing = [minion_id for minion_id in minion_ids if data.get(minion_id) is not True]
            if not missing or time.monotonic() > end:
                return missing
            time.sleep(1)
