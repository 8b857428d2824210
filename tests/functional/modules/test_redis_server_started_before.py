"""
redis_server.started_before through the real loader: which Redis processes predate a change of
their config (so ``redis_server.running`` restarts Redis even where ``watch`` does not fire: over
salt-ssh, and after a run cut off between the edit and the restart).

The process is a real listener under a name of our own (a Python process that renames itself in
/proc/self/comm): the function reads only a process's name, start time and listening sockets, and
the name keeps the host's real redis-server processes (other tests' instances) out of it.
Stopped by PID.
"""

import os
import subprocess
import sys
import time

import pytest

NAME = "sf-redis-probe"
LISTENER = (
    f"open('/proc/self/comm', 'w').write({NAME!r}); import socket, time; s = socket.socket(); "
    "s.bind(('127.0.0.1', 0)); s.listen(); print(s.getsockname()[1], flush=True); time.sleep(120)"
)


@pytest.fixture
def listener():
    proc = subprocess.Popen([sys.executable, "-c", LISTENER], stdout=subprocess.PIPE, text=True)  # pylint: disable=consider-using-with
    try:
        port = int(proc.stdout.readline())
        time.sleep(0.05)
        yield proc.pid, port
    finally:
        proc.kill()
        proc.wait(timeout=10)


def write_conf(path, port, age=0.0):
    path.write_text(f"port {port}\nrequirepass changed\n", encoding="utf-8")
    if age:
        past = time.time() - age
        os.utime(path, (past, past))
    return str(path)


def test_started_after_the_last_change_is_current(modules, tmp_path, listener):
    _, port = listener
    assert (
        modules.redis_server.started_before(
            write_conf(tmp_path / "r.conf", port, age=30), name=NAME
        )
        == []
    )


def test_started_before_the_last_change_needs_a_restart(modules, tmp_path, listener):
    pid, port = listener
    assert modules.redis_server.started_before(
        write_conf(tmp_path / "r.conf", port), name=NAME
    ) == [pid]


def test_an_instance_on_another_port_is_not_ours(modules, tmp_path, listener):
    _, port = listener
    other = port + 1 if port < 65535 else port - 1
    assert (
        modules.redis_server.started_before(write_conf(tmp_path / "r.conf", other), name=NAME) == []
    )


def test_missing_config_means_nothing_to_restart(modules, tmp_path, listener):
    assert modules.redis_server.started_before(str(tmp_path / "missing.conf"), name=NAME) == []


def test_port_owners_names_the_listener(modules, listener):
    pid, port = listener
    owners = modules.redis_server.port_owners(port)
    assert [(o["pid"], o["name"]) for o in owners] == [(pid, NAME)]
    assert abs(owners[0]["started"] - time.time()) < 60
