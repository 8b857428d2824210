"""
Real services for the diagnose/verify tests (tests/*/test_diagnose*.py, tests/*/test_verify*.py).

- ``RedisServer``: our own ``redis-server`` on a random free port (never 6379: the Phase 1 test
  owns it), with its own dir, stopped by PID.
- ``Pm2``: the Phase 3/5 tests' pm2 sandbox (tests/functional/pm2_support) with restart, save and
  log helpers; the stand-in apps are ``tests/apps/diag_*.js``.
- ``SysvService``: a real init script + rc2.d link so ``service.status``/``service.enabled`` of
  Salt's service module answer for our Redis (this host has no systemd); removed afterwards.
- ``fake_proc_swaps``: a copy of ``/proc/swaps``'s format. Swap is kernel-global and other tests
  turn it on and off at the same time, so "no swap" cannot be produced reliably for real here;
  diagnose reads this file through its ``proc_swaps`` parameter instead.
"""

import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests import helpers
from tests.conftest import DEFAULTS, REPO, deep_merge
from tests.functional.pm2_support import Pm2Sandbox

APPS = REPO / "tests" / "apps"
BACKEND_APP = APPS / "diag_backend.js"
IDLE_APP = APPS / "diag_idle.js"
QUEUE_KEYS = {"REDIS_DB": "0", "REDIS_PASSWORD": "", "QUEUE_ENABLED": "true", "QUEUE_CONCURRENCY": "5"}
SWAPS_HEADER = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
READY = "[Queue] ✅ Workers gestartet"


def redis_binary(workdir):
    """A ``redis-server`` to run: the installed one, else redis-tools' ``redis-check-rdb`` (the same
    binary; it runs as the server when called by that name), never the package's service."""
    found = shutil.which("redis-server")
    if found:
        return found
    checker = shutil.which("redis-check-rdb")
    if not checker:
        raise AssertionError("no redis binary: run ./scripts/test.sh (it installs redis-tools)")
    link = Path(workdir) / "redis-server"
    if not link.exists():
        link.symlink_to(checker)
    return str(link)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout=10.0, what="condition"):
    """``tests.helpers.wait_for`` that fails the test on a timeout."""
    if not helpers.wait_for(predicate, timeout, interval=0.05):
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def redis_ping(port, host="127.0.0.1", password=""):
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            if password:
                sock.sendall(f"*2\r\n$4\r\nAUTH\r\n${len(password)}\r\n{password}\r\n".encode())
                sock.recv(64)
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """Our own redis-server: ``bind``/``password``/``policy`` as given; no persistence."""

    def __init__(self, workdir, port=None, bind="127.0.0.1", password="", policy="noeviction"):
        self.port = port or free_port()
        self.dir = Path(workdir) / f"redis-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pidfile = self.dir / "redis.pid"
        conf = [f"port {self.port}", f"bind {bind}", f"dir {self.dir}", 'save ""', "appendonly no",
                f"maxmemory-policy {policy}", "protected-mode yes", f"pidfile {self.pidfile}"]
        if password:
            conf.append(f"requirepass {password}")  # in a file, not argv
        self.conf = self.dir / "redis.conf"
        self.conf.write_text("\n".join(conf) + "\n", encoding="utf-8")
        self.conf.chmod(0o600)
        self.password = password
        self.host = bind.split()[0]
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([redis_binary(self.dir.parent), str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_for(lambda: redis_ping(self.port, self.host, self.password), 10, f"redis on {self.port}")
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class Pm2(Pm2Sandbox):
    """The pm2 sandbox of the Phase 3/5 tests (its own PM2_HOME ``<root>/pm2``, a clean environment,
    killed by PID at the end), plus what the diagnose/verify tests do with their stand-in apps."""

    def restart(self, name):
        self.pm2("restart", name)
        self.remember_pids()

    def delete(self, name):
        self.pm2("delete", name)

    def save(self):
        self.pm2("save", "--force")

    def log_path(self, name, kind="out"):
        return self.home / "logs" / f"{name}-{'out' if kind == 'out' else 'error'}.log"

    def wait_log(self, name, text, kind="out", timeout=10):
        path = self.log_path(name, kind)
        wait_for(lambda: path.exists() and text in path.read_text(encoding="utf-8", errors="replace"),
                 timeout, f"{text!r} in {path}")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, request):
    return tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])


@pytest.fixture(scope="module")
def pm2(workdir):  # pylint: disable=redefined-outer-name
    """A pm2 with its own PM2_HOME for the module's stand-in apps; killed afterwards."""
    manager = Pm2(workdir)
    try:
        yield manager
    finally:
        manager.kill()


class SysvService:
    """A real init script for our Redis, enabled in rc2.d (destructive; removed on exit)."""

    def __init__(self, name, redis):
        self.name = name
        self.script = Path("/etc/init.d") / name
        self.link = Path("/etc/rc2.d") / f"S01{name}"
        self.redis = redis

    def __enter__(self):
        self.script.write_text(
            "#!/bin/sh\n# serverfix test service (tests/diag_support.py): status of a test Redis\n"
            f'case "$1" in status) kill -0 "$(cat {self.redis.pidfile} 2>/dev/null)" 2>/dev/null ;; '
            "*) exit 0 ;; esac\n", encoding="utf-8")
        self.script.chmod(0o755)
        self.link.symlink_to(f"../init.d/{self.name}")
        return self

    def __exit__(self, *exc):
        self.link.unlink(missing_ok=True)
        self.script.unlink(missing_ok=True)


def write_env(path, values, header="NODE_ENV=production\nDATABASE_URL=postgresql://intranet@127.0.0.1/intranet\n"):
    """A backend .env: ``header`` lines, then ``values`` as KEY=value lines."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "".join(f"{k}={v}\n" for k, v in values.items()), encoding="utf-8")
    path.chmod(0o640)
    return path


def fake_proc_swaps(path, entries=()):
    """A file in /proc/swaps' format with ``entries`` of ``(file, size_kib)``."""
    lines = [f"{name}\t\t\t\tfile\t\t{size}\t\t0\t\t-2\n" for name, size in entries]
    Path(path).write_text(SWAPS_HEADER + "".join(lines), encoding="utf-8")
    return str(path)


def settings(**sections):
    """The merged settings (defaults.yaml + the given sections), as map.jinja renders them."""
    return deep_merge(DEFAULTS, sections)


def ids(report, key="findings"):
    return [item["id"] for item in report[key]]


def problems(report):
    """``{id: severity}`` of the critical and warning findings."""
    return {f["id"]: f["severity"] for f in report["findings"] if f["severity"] != "info"}


def statuses(report):
    return {c["id"]: c["status"] for c in report["checks"]}
