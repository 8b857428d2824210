"""
A real pm2 for the tests: the locally installed pm2 (tests/node) with its own PM2_HOME under a
temp directory, run as a given user, with the stand-in apps of tests/apps. Teardown kills that
daemon (``pm2 kill`` by its PM2_HOME, then by PID) and every app process it ran: no daemon is
left behind.
"""

import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from tests.support.host import wait_for
from tests.support.paths import APPS, NODE_MODULES, backup_mirror, node_tool

# a list read in pm2.calls: jlist's own call, asked over the daemon's socket (not a CLI call)
LIST_CALL = "rpc:getMonitorData"


def workdir(prefix="sf-pm2-"):
    """A temp dir any user can traverse (pytest's tmp is 0700 root: a test user can't run there)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    path.chmod(0o755)
    return path


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Pm2Sandbox:
    """pm2 as ``user`` with PM2_HOME ``<root>/pm2``; the CLI environment is explicit and clean."""

    def __init__(self, root, user="root"):
        self.root = Path(root)
        self.user = user
        self.home = self.root / "pm2"
        self.bin = node_tool("pm2")
        self.app_pids = set()
        self.calls_log = None  # the outside count of pm2 calls (counting_bin)

    def module_kwargs(self):
        """``user``, ``pm2_home`` and ``pm2_bin`` (the counting wrapper once made) for the pm2
        module's functions and states."""
        pm2_bin = str(self.root / "bin" / "pm2") if self.calls_log else self.bin
        return {"user": self.user, "pm2_home": str(self.home), "pm2_bin": pm2_bin}

    def counting_bin(self):
        """A pm2 wrapper that logs each call's command, then runs the real pm2: an outside count."""
        wrapper = self.root / "bin" / "pm2"
        wrapper.parent.mkdir(exist_ok=True)
        self.calls_log = self.root / "pm2-calls.log"  # pylint: disable=attribute-defined-outside-init
        self.calls_log.touch()
        self.calls_log.chmod(0o666)
        wrapper.write_text(
            f'#!/bin/sh\nprintf \'%s\\n\' "$1" >> {self.calls_log}\nexec {self.bin} "$@"\n',
            encoding="utf-8",
        )
        wrapper.chmod(0o755)
        return str(wrapper)

    def calls(self, reset=False):
        made = self.calls_log.read_text(encoding="utf-8").split()
        if reset:
            self.calls_log.write_text("", encoding="utf-8")
        return made

    def _env(self, extra=None):
        node_dir = os.path.dirname(shutil.which("node") or "/usr/bin/node")
        env = {
            "PATH": f"{node_dir}:/usr/local/bin:/usr/bin:/bin",
            "HOME": pwd.getpwnam(self.user).pw_dir,
            "PM2_HOME": str(self.home),
            "LANG": "C.UTF-8",
            "NODE_PATH": str(NODE_MODULES),
        }
        env.update(extra or {})
        return env

    def pm2(self, *args, env=None, check=True, as_user=None):
        user = as_user or self.user
        cmd = ["env", "-i"] + [f"{k}={v}" for k, v in self._env(env).items()] + [self.bin, *args]
        if user != "root":
            cmd = ["runuser", "-u", user, "--"] + cmd
        out = subprocess.run(
            cmd, capture_output=True, text=True, timeout=60, cwd=self.root, check=False
        )
        if check and out.returncode != 0:
            raise AssertionError(
                f"pm2 {' '.join(args)} failed ({out.returncode}): {out.stderr[-2000:]}"
            )
        return out

    def start(self, name, script="prisma-studio.js", env=None, namespace=None):
        extra = ["--namespace", namespace] if namespace else []
        self.pm2(
            "start", str(APPS / script), "--name", name, "--cwd", str(self.root), *extra, env=env
        )
        self.remember_pids()

    def restart(self, name):
        self.pm2("restart", name)
        self.remember_pids()

    def delete(self, name):
        self.pm2("delete", name)

    def save(self):
        self.pm2("save", "--force")

    def log_path(self, name, kind="out"):
        return self.home / "logs" / f"{name}-{'out' if kind == 'out' else 'error'}.log"

    def wait_log(self, name, lines, kind="out", timeout=10):
        """Wait until ``name``'s log holds ``lines`` (one text or several, e.g. ``READY``)."""
        path = self.log_path(name, kind)
        lines = [lines] if isinstance(lines, str) else list(lines)

        def logged():
            text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
            return all(line in text for line in lines)

        wait_for(logged, timeout, interval=0.05, what=f"{lines!r} in {path}")

    def start_backend(self, name, env_file, crash_on_queue=False, env=None):
        extra = {"APP_ENV_FILE": str(env_file)}
        if crash_on_queue:
            extra["APP_CRASH_ON_QUEUE"] = "1"
        extra.update(env or {})
        self.start(name, "backend.js", env=extra)

    def jlist(self, as_user=None):
        out = self.pm2("jlist", as_user=as_user)
        return json.loads(out.stdout.strip().splitlines()[-1])

    def procs(self, name):
        return [p for p in self.jlist() if p["name"] == name]

    def remember_pids(self):
        pid = self.daemon_pid()
        if pid:
            self.app_pids |= {p["pid"] for p in self.jlist(as_user=owner_name(pid)) if p["pid"]}

    def wait_online(self, name, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            procs = self.procs(name)
            if procs and all(p["pm2_env"]["status"] == "online" for p in procs):
                self.remember_pids()
                return procs
            time.sleep(0.2)
        raise AssertionError(
            f"{name} not online: {[p['pm2_env']['status'] for p in self.procs(name)]}"
        )

    def daemon_pid(self):
        try:
            pid = int((self.home / "pm2.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if alive(pid) else None

    def saved(self):
        try:
            return [e["name"] for e in json.loads((self.home / "dump.pm2").read_text())]
        except FileNotFoundError:
            return []

    def kill(self):
        """``pm2 kill`` this PM2_HOME's daemon (only if one runs: the CLI spawns one), then PID."""
        pid = self.daemon_pid()
        if pid:
            try:
                self.remember_pids()
            finally:
                self.pm2("kill", check=False, as_user=owner_name(pid))
        for leftover in ({pid} if pid else set()) | self.app_pids:
            if leftover and alive(leftover):
                os.kill(leftover, signal.SIGKILL)


def owner_name(pid):
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        uid = next(int(line.split()[1]) for line in handle if line.startswith("Uid:"))
    return pwd.getpwuid(uid).pw_name


def _pids_of_uid(uid):
    pids = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{entry}").st_uid == uid:
                pids.append(int(entry))
        except FileNotFoundError:
            continue
    return pids


@contextmanager
def sandbox(user="root", counting=False):
    """A :class:`Pm2Sandbox` removed afterwards, its daemon and apps killed; ``counting``: its
    pm2 goes through :meth:`Pm2Sandbox.counting_bin`."""
    root = workdir()
    if user != "root":
        shutil.chown(root, user, user)
    box = Pm2Sandbox(root, user)
    try:
        if counting:
            box.counting_bin()
        yield box
    finally:
        box.kill()
        shutil.rmtree(root, ignore_errors=True)
        # the backups the dotenv module and the rollback made there by default
        shutil.rmtree(backup_mirror(root), ignore_errors=True)


@contextmanager
def system_user(prefix="sfpm2"):
    """A throwaway login-less user with a home under /var/tmp; removed later with its processes."""
    name = f"{prefix}{os.getpid() % 100000}"
    home = workdir("sf-home-")
    subprocess.run(
        ["useradd", "--system", "--home-dir", str(home), "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
    )
    shutil.chown(home, name, name)
    try:
        yield name
    finally:
        uid = pwd.getpwnam(name).pw_uid
        for pid in _pids_of_uid(uid):  # whatever this test ran as its own user, by PID
            os.kill(pid, signal.SIGKILL)
        subprocess.run(["userdel", name], check=False, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


PM2_UNIT_TEMPLATE = NODE_MODULES / "pm2" / "lib" / "templates" / "init-scripts" / "systemd.tpl"


def boot_unit(systemd_root, user, pm2_home, enabled=True, unit_user=None):
    """The unit ``pm2 startup systemd -u <user> --hp <home>`` writes (pm2's own template), under a
    test's systemd tree instead of the host's /etc/systemd/system, enabled there with
    ``systemctl --root`` (offline: no systemd is asked)."""
    unit = Path(systemd_root) / "etc" / "systemd" / "system" / f"pm2-{user}.service"
    unit.parent.mkdir(parents=True, exist_ok=True)
    text = PM2_UNIT_TEMPLATE.read_text(encoding="utf-8")
    for key, value in {
        "%USER%": unit_user or user,
        "%HOME_PATH%": str(pm2_home),
        "%PM2_PATH%": node_tool("pm2"),
        "%NODE_PATH%": "/usr/bin",
        "%SERVICE_NAME%": f"pm2-{user}",
    }.items():
        text = text.replace(key, value)
    unit.write_text(text, encoding="utf-8")
    if enabled:
        subprocess.run(
            ["systemctl", f"--root={systemd_root}", "enable", unit.name],
            check=True,
            capture_output=True,
        )
    return unit


def startup_stub(directory, systemd_root, real_pm2):
    """A pm2 for ``pm2_bin`` whose ``pm2 startup systemd -u U --hp H`` does what pm2's does, but
    into ``systemd_root`` (pm2 itself always writes the host's /etc/systemd/system and enables the
    unit there: host-global), logging its argv to ``<directory>/startup.log``; every other command
    runs the real pm2. Returns ``(path, log)``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "startup.log"
    log.touch()
    stub = directory / "pm2"
    units = Path(systemd_root) / "etc" / "systemd" / "system"
    stub.write_text(
        f"""#!/bin/sh
if [ "$1" = startup ]; then
  printf '%s\\n' "$*" >> {log}
  user=; hp=
  while [ $# -gt 0 ]; do
    case "$1" in -u) user=$2; shift;; --hp) hp=$2; shift;; esac; shift
  done
  mkdir -p {units}
  sed -e "s|%USER%|$user|g" -e "s|%HOME_PATH%|$hp/.pm2|g" -e "s|%PM2_PATH%|{real_pm2}|g" \\
    -e "s|%NODE_PATH%|/usr/bin|g" -e "s|%SERVICE_NAME%|pm2-$user|g" \\
    {PM2_UNIT_TEMPLATE} > {units}/pm2-$user.service
  exec systemctl --root={systemd_root} enable pm2-$user.service
fi
exec {real_pm2} "$@"
""",
        encoding="utf-8",
    )
    stub.chmod(0o755)
    return str(stub), log
