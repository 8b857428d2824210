"""
redis_server through the real loader: in-place redis.conf edits and the real protocol against a
real redis-server (our own process on a free port, with a password; stopped by PID).
"""

import os
import shutil
import socket
import subprocess
import time

import pytest
from salt.exceptions import CommandExecutionError

from tests.support.host import free_port

CONF = """# Redis configuration file example.
bind 127.0.0.1 ::1
protected-mode yes
port 6379
# requirepass foobared
appendonly no
appendfsync everysec
appendonly no
"""


@pytest.fixture
def conf(tmp_path):
    path = tmp_path / "redis.conf"
    path.write_text(CONF, encoding="utf-8")
    path.chmod(0o640)
    return path


def test_plan_edits_in_place_and_keeps_everything_else(modules, conf):
    plan = modules.redis_server.config_plan(
        str(conf),
        {"bind": "127.0.0.1 -::1", "appendonly": "yes", "port": "6379", "supervised": "auto"},
    )
    assert plan["changes"] == {
        "bind": {"old": "127.0.0.1 ::1", "new": "127.0.0.1 -::1"},
        "appendonly": {"old": "no", "new": "yes"},
        "supervised": {"old": None, "new": "auto"},
    }
    lines = plan["content"].splitlines()
    assert lines[:4] == [
        "# Redis configuration file example.",
        "bind 127.0.0.1 -::1",
        "protected-mode yes",
        "port 6379",
    ]
    assert "appendonly yes" in lines and lines.count("appendonly yes") == 1
    assert "supervised auto" == lines[-1]
    assert conf.read_text(encoding="utf-8") == CONF  # a plan writes nothing


def test_set_is_atomic_keeps_mode_and_is_idempotent(modules, conf):
    settings = {"appendonly": "yes", "requirepass": "s3cret-pw"}
    changes = modules.redis_server.config_set(str(conf), settings)
    assert changes["requirepass"] == {"old": None, "new": "<secret>"}
    assert oct(conf.stat().st_mode & 0o777) == "0o640"
    assert "requirepass s3cret-pw" in conf.read_text(encoding="utf-8")
    assert modules.redis_server.config_set(str(conf), settings) == {}
    assert modules.redis_server.config_get(str(conf))["requirepass"] == "<secret>"
    # an empty password comments the directive out again
    changes = modules.redis_server.config_set(str(conf), {"requirepass": None})
    assert changes == {"requirepass": {"old": "<secret>", "new": None}}
    assert "requirepass" not in modules.redis_server.config_get(str(conf))


def test_managed_marker_written_once_and_the_old_one_recognised(modules, tmp_path):
    path = tmp_path / "redis.conf"
    path.write_text("port 6379\n", encoding="utf-8")
    modules.redis_server.config_set(str(path), {"appendonly": "yes"})
    text = path.read_text(encoding="utf-8")
    assert (
        text == "port 6379\n\n# managed by serverfix (see the formula's pillar.example)\n"
        "appendonly yes\n"
    )
    old = (
        "port 6379\n\n# serverfix: managed below (see the formula's pillar.example)\n"
        "appendonly yes\n"
    )
    path.write_text(old, encoding="utf-8")  # edited by an earlier version
    modules.redis_server.config_set(str(path), {"supervised": "auto"})
    assert path.read_text(encoding="utf-8") == old + "supervised auto\n"


def test_crlf_file_keeps_crlf(modules, tmp_path):
    path = tmp_path / "redis.conf"
    path.write_bytes(b"port 6379\r\nappendonly no\r\n")
    modules.redis_server.config_set(str(path), {"appendonly": "yes", "supervised": "auto"})
    data = path.read_bytes()
    assert (
        b"appendonly yes\r\n" in data
        and b"supervised auto\r\n" in data
        and b"\n" not in data.replace(b"\r\n", b"")
    )


def test_state_test_mode_predicts_and_writes_nothing(states, conf):
    before = conf.read_bytes()
    ret = states.redis_server.configured(
        name=str(conf), bind=["127.0.0.1"], password="pw-secret", test=True
    )
    assert ret.result is None
    assert set(ret.changes) == {
        "bind",
        "supervised",
        "maxmemory-policy",
        "appendonly",
        "requirepass",
    }
    assert "pw-secret" not in str(ret.changes) + ret.comment
    assert conf.read_bytes() == before


@pytest.fixture
def redis_with_password(tmp_path):
    binary = shutil.which("redis-server")
    if not binary:
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "redis-server"],
            check=True,
            capture_output=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        binary = shutil.which("redis-server")
    port = free_port()
    conf = tmp_path / "r.conf"
    # the password goes in a config file, not argv
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\nrequirepass pw-9f3\ndir {tmp_path}\nsave ''\n",
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [binary, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_ping_with_auth_over_the_socket(modules, redis_with_password):
    port = redis_with_password
    assert modules.redis_server.ping(port=port, password="pw-9f3") is True
    with pytest.raises(CommandExecutionError, match=f"^127.0.0.1:{port}: Redis answered NOAUTH$"):
        modules.redis_server.ping(port=port, password="")
    with pytest.raises(CommandExecutionError) as wrong:
        modules.redis_server.ping(port=port, password="wrong")
    assert wrong.value.error == f"127.0.0.1:{port}: Redis answered WRONGPASS"  # no password in it
    with pytest.raises(CommandExecutionError, match="^Redis answered NOAUTH"):
        modules.redis_server.command("CONFIG", "GET", "port", port=port)
    assert modules.redis_server.command("CONFIG", "GET", "port", port=port, password="pw-9f3") == [
        "port",
        str(port),
    ]
    with pytest.raises(
        CommandExecutionError, match=": Redis answered WRONGPASS$"
    ):  # at once, no retries
        modules.redis_server.wait_pong(port=port, password="wrong", timeout=30)
    assert modules.redis_server.wait_pong(port=port, password="pw-9f3", timeout=1) is True
    assert "127.0.0.1" in modules.redis_server.listening_addresses(port)


def test_ping_closed_port(modules):
    port = free_port()
    with pytest.raises(CommandExecutionError, match=f"^127.0.0.1:{port}: Connection refused$"):
        modules.redis_server.ping(port=port, password="")
    with pytest.raises(CommandExecutionError, match="^Connection refused$"):
        modules.redis_server.command("PING", port=port)


def test_unreadable_or_missing_config_is_a_clear_error(modules, states, tmp_path):
    missing = tmp_path / "missing.conf"
    with pytest.raises(CommandExecutionError, match=f"^{missing}: no such file$"):
        modules.redis_server.config_get(str(missing))
    with pytest.raises(CommandExecutionError, match="cannot read it"):
        modules.redis_server.config_plan(str(tmp_path), {"appendonly": "yes"})  # a directory
    ret = states.redis_server.configured(name=str(missing), bind=["127.0.0.1"], pkg="redis-server")
    assert (ret.result, ret.changes) == (False, {})
    assert ret.comment == f"{missing}: no such file; is the Redis package (redis-server) installed?"
    conf = tmp_path / "ro" / "redis.conf"
    conf.parent.mkdir()
    conf.write_text("port 6379\n", encoding="utf-8")
    subprocess.run(
        ["chattr", "+i", str(conf.parent)], check=True
    )  # no backup, no temp file next to it
    try:
        with pytest.raises(
            CommandExecutionError, match="cannot write it .*; the file is unchanged"
        ):
            modules.redis_server.config_set(str(conf), {"appendonly": "yes"})
        ret = states.redis_server.configured(name=str(conf), bind=["127.0.0.1"])
    finally:
        subprocess.run(["chattr", "-i", str(conf.parent)], check=True)
    assert (ret.result, ret.changes) == (False, {}) and "cannot write it" in ret.comment
    assert conf.read_text(encoding="utf-8") == "port 6379\n"


def test_pong_state_fails_when_redis_is_down(states):
    port = free_port()
    ret = states.redis_server.pong(name="127.0.0.1", port=port, password="", timeout=0.5)
    assert (
        ret.result is False
        and "did not answer PING" in ret.comment
        and "Connection refused" in ret.comment
    )
    assert "Additional info" not in ret.comment
    ret = states.redis_server.pong(name="127.0.0.1", port=port, password="", test=True)
    assert ret.result is None and not ret.changes


def test_reset_failed_is_a_no_op_without_systemd(modules):
    # this test host does not boot systemd; the real reset (start limit hit while the port was
    # taken, re-run after freeing it) is proven on the systemd replica:
    # tests/e2e/test_proof_faults.py::test_fault_on_a_fresh_replica[redis_port_taken]
    booted = os.path.isdir("/run/systemd/system")
    if booted:
        pytest.skip("host boots systemd: covered by the replica fault test")
    assert modules.redis_server.reset_failed("redis-server") is False
