"""
Real Redis for the tests, never the host's service on 6379 (the Phase 1 test owns it):
``RedisServer`` runs our own ``redis-server`` on a free port with its own dir, stopped by PID;
``SysvService`` gives it a real init script + rc2.d link so Salt's service module answers for it
(this host has no systemd). ``fake_info_server``: a stand-in that reports an old Redis version.
"""

import shutil
import signal
import socket
import subprocess
import threading
from contextlib import contextmanager
from pathlib import Path

from tests.support.host import free_port, wait_for


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


def _reply(stream):
    line = stream.readline()
    kind, rest = line[:1], line[1:-2]
    if kind in b"+-":
        return rest.decode()
    if kind == b":":
        return int(rest)
    if kind == b"$":
        return None if int(rest) < 0 else stream.read(int(rest) + 2)[:-2].decode()
    return [_reply(stream) for _ in range(int(rest))]


class RedisServer:
    """Our own redis-server: ``bind``/``password``/``policy`` as given; no persistence unless
    ``save`` is given (e.g. ``"3600 1"``: an RDB written on shutdown); ``extra`` config lines."""

    def __init__(
        self,
        workdir,
        port=None,
        bind="127.0.0.1",
        password="",
        policy="noeviction",
        save='""',
        extra=(),
    ):
        self.port = port or free_port()
        self.dir = Path(workdir) / f"redis-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pidfile = self.dir / "redis.pid"
        conf = [
            f"port {self.port}",
            f"bind {bind}",
            f"dir {self.dir}",
            f"save {save}",
            "appendonly no",
            f"maxmemory-policy {policy}",
            "protected-mode yes",
            f"pidfile {self.pidfile}",
            *extra,
        ]
        if password:
            conf.append(f"requirepass {password}")  # in a file, not argv
        self.conf = self.dir / "redis.conf"
        self.conf.write_text("\n".join(conf) + "\n", encoding="utf-8")
        self.conf.chmod(0o600)
        self.password = password
        self.host = bind.split()[0]
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [redis_binary(self.dir.parent), str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(
            lambda: redis_ping(self.port, self.host, self.password),
            10,
            interval=0.05,
            what=f"redis on {self.port}",
        )
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
        self.proc = None

    def restart(self, port=None, password=None):
        """Stop and start again from the (edited) config, reached at ``port``/``password``."""
        self.stop()
        self.port = port or self.port
        self.password = self.password if password is None else password
        return self.start()

    def call(self, *args):
        """One command over the socket (AUTH first with the current password): the raw reply."""
        with socket.create_connection((self.host, self.port), timeout=5) as sock:
            stream = sock.makefile("rb")
            for command in ([("AUTH", self.password)] if self.password else []) + [args]:
                parts = [str(arg).encode() for arg in command]
                sock.sendall(
                    b"*%d\r\n" % len(parts)
                    + b"".join(b"$%d\r\n%s\r\n" % (len(part), part) for part in parts)
                )
                reply = _reply(stream)
            return reply

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class SysvService:
    """A real init script for our Redis, enabled in rc2.d (destructive; removed on exit)."""

    def __init__(self, name, redis):
        self.name = name
        self.script = Path("/etc/init.d") / name
        self.link = Path("/etc/rc2.d") / f"S01{name}"
        self.redis = redis

    def __enter__(self):
        self.script.write_text(
            "#!/bin/sh\n# serverfix test service (tests/support/redis.py): status of a test Redis\n"
            f'case "$1" in status) kill -0 "$(cat {self.redis.pidfile} 2>/dev/null)" 2>/dev/null'
            " ;; "
            "*) exit 0 ;; esac\n",
            encoding="utf-8",
        )
        self.script.chmod(0o755)
        self.link.symlink_to(f"../init.d/{self.name}")
        return self

    def __exit__(self, *exc):
        self.link.unlink(missing_ok=True)
        self.script.unlink(missing_ok=True)


@contextmanager
def fake_info_server(version):
    """Fault injection: a TCP server on a free loopback port that answers every command with an
    ``INFO server`` reply for Redis ``version`` (the real redis-server here is new, so an old
    running Redis is faked). Yields the port; serves until the block ends."""
    body = f"# Server\r\nredis_version:{version}\r\nredis_mode:standalone\r\n".encode()
    reply = b"$%d\r\n%s\r\n" % (len(body), body)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1.0)
                try:
                    conn.recv(4096)
                    conn.sendall(reply)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(2)
        listener.close()
