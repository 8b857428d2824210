"""
``pm2.list`` reads the process list over the daemon's RPC socket (``_utils/serverfix_pm2rpc.py``,
the one call ``pm2 jlist`` makes) instead of starting the pm2 CLI, against the REAL pm2 daemon
(tests/node) in a PM2_HOME of its own: the same list as ``pm2 jlist`` (through the same parse and
masking path), and the CLI as before whenever the socket cannot be used. The fallback tests are
fault injection: a plain Python process named like the daemon, with a unix socket that answers
nonsense (or nothing), and a stub pm2 CLI that prints a canned ``jlist``.
"""

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from tests.support.host import wait_for
from tests.support.pm2 import LIST_CALL, sandbox, system_user, workdir

pytestmark = [pytest.mark.destructive_test, pytest.mark.skip_if_not_root]

SECRET = "tok-rpc-1a2b3c4d5e"
# what changes from one read to the next without anything happening
MOVING = ("memory", "cpu")


@pytest.fixture
def box():
    with sandbox(counting=True) as pm2box:
        yield pm2box


def _steady(procs):
    return [{k: v for k, v in p.items() if k not in MOVING} for p in procs]


def _cli_list(modules, box, **kw):
    """``pm2.list`` through the pm2 CLI: the socket made a symlink (to the real one, in PM2_HOME)
    that the RPC client refuses and the CLI follows."""
    sock = box.home / "rpc.sock"
    real = box.home / "rpc.real.sock"
    sock.rename(real)
    sock.symlink_to(real.name)
    try:
        return modules.pm2.list(refresh=True, **(kw or box.module_kwargs()))
    finally:
        sock.unlink()
        real.rename(sock)


def test_rpc_list_equals_the_jlist_list(modules, box):
    box.start("prisma-studio", env={"API_TOKEN": SECRET})
    box.start("worker", env={"DATABASE_URL": f"postgres://app:{SECRET}@db/app"})
    box.start("idle")
    box.pm2("stop", "idle")
    box.calls(reset=True)
    modules.pm2.calls(reset=True)

    started = time.monotonic()
    rpc = modules.pm2.list(**box.module_kwargs())
    rpc_seconds = time.monotonic() - started
    assert modules.pm2.calls()["commands"] == [LIST_CALL] and box.calls() == []  # no CLI started

    started = time.monotonic()
    cli = _cli_list(modules, box)
    cli_seconds = time.monotonic() - started
    assert modules.pm2.calls()["commands"] == [LIST_CALL, "jlist"] and box.calls() == ["jlist"]
    assert _steady(rpc) == _steady(cli)

    raw = box.jlist()  # pm2's own output, read here
    assert [(p["name"], p["pid"], p["pm2_env"]["status"]) for p in raw] == [
        (p["name"], p["pid"], p["status"]) for p in rpc
    ]
    assert [sorted(p["pm2_env"]["env"]) for p in raw] == [p["env_keys"] for p in rpc]
    by_name = {p["name"]: p for p in rpc}
    assert by_name["idle"]["status"] == "stopped" and by_name["idle"]["pid"] == 0
    assert by_name["worker"]["status"] == "online" and by_name["worker"]["pid"] > 0
    assert {p["source"] for p in rpc} == {"jlist"}
    print(f"\nlist over the socket {rpc_seconds:.3f}s, through `pm2 jlist` {cli_seconds:.3f}s")


def test_masking_is_unchanged(modules, box):
    box.start("prisma-studio", env={"API_TOKEN": SECRET, "SESSION_SECRET": "sess-9z8y7x6w"})
    modules.pm2.calls(reset=True)
    procs = modules.pm2.list(**box.module_kwargs())
    assert modules.pm2.calls()["commands"] == [LIST_CALL]
    assert SECRET not in json.dumps(procs) and "sess-9z8y7x6w" not in json.dumps(procs)
    assert {"API_TOKEN", "SESSION_SECRET"} <= set(procs[0]["env_keys"])
    # the secret values the list saw are masked in any text, as after a jlist
    kw = {"user": box.user, "pm2_home": str(box.home)}
    assert modules.pm2.mask(f"a {SECRET} b sess-9z8y7x6w", **kw) == "a <secret> b <secret>"
    with open(procs[0]["out_log"], "a", encoding="utf-8") as log:
        log.write(f"token is {SECRET}\n")
    assert "token is <secret>" in modules.pm2.log_tail(
        "prisma-studio", lines=5, **box.module_kwargs()
    )


def test_a_users_daemon_is_read_as_root(modules):
    """Root asks the socket of a daemon run by another user (socket and daemon that user's)."""
    with system_user() as user, sandbox(user) as box:
        box.start("prisma-studio", env={"API_TOKEN": SECRET})
        kw = {"user": user, "pm2_home": str(box.home), "pm2_bin": box.bin}
        modules.pm2.calls(reset=True)
        procs = modules.pm2.list(**kw)
        assert modules.pm2.calls()["commands"] == [LIST_CALL]
        assert [(p["name"], p["status"]) for p in procs] == [("prisma-studio", "online")]
        assert os.stat(box.home / "rpc.sock").st_uid == os.stat(box.home).st_uid != 0
        assert SECRET not in json.dumps(procs)


def test_after_a_change_the_socket_is_asked_again(modules, box):
    box.start("prisma-studio")
    box.start("worker")
    modules.pm2.calls(reset=True)
    modules.pm2.list(**box.module_kwargs())
    modules.pm2.stop("worker", **box.module_kwargs())
    assert modules.pm2.status("worker", **box.module_kwargs())["status"] == "stopped"
    assert modules.pm2.calls()["commands"] == [LIST_CALL, "stop", LIST_CALL]


# ---------------------------------------------------------------- fault injection

FAKE_DAEMON = textwrap.dedent(
    """
    import socket, sys, time
    home, mode = sys.argv[1], sys.argv[2]
    if mode != "no-socket":
        server = socket.socket(socket.AF_UNIX)
        server.bind(home + "/rpc.sock")
        server.listen(8)
    for name in ("pm2.pid", "fake.pid"):  # fake.pid last: the test waits for it
        with open(home + "/" + name + ".tmp", "w") as handle:
            handle.write(str(__import__("os").getpid()))
        __import__("os").rename(home + "/" + name + ".tmp", home + "/" + name)
    while True:
        if mode == "no-socket":
            time.sleep(1)
            continue
        conn, _ = server.accept()
        request = conn.recv(65536)
        if mode == "impostor" and request:  # a well-formed reply, with its own list
            rid = request[request.rindex(b"s:") :]
            body = b'j:{"args": [[{"pm2_env": {"name": "impostor", "status": "online"}}]]}'
            conn.sendall(bytes([0x12]) + b"".join(
                len(a).to_bytes(4, "big") + a for a in (body, rid)))
        if mode == "nonsense":
            conn.sendall(b"\\x1f\\x00\\x00\\x00\\x05hello, I am no pm2 daemon\\n")
            conn.close()
        # silent: the connection is kept open and never answered
    """
)
CANNED = [
    {
        "name": "api",
        "pid": 4321,
        "pm_id": 0,
        "monit": {"memory": 1, "cpu": 0},
        "pm2_env": {"name": "api", "status": "online", "env": {"API_TOKEN": SECRET}},
    }
]


def fake_pid(home):
    with open(os.path.join(home, "fake.pid"), encoding="ascii") as handle:
        return int(handle.read())


@pytest.fixture
def fake_home():
    """A PM2_HOME whose daemon is a Python process named like pm2's ('God Daemon'), and a stub
    pm2 CLI whose ``jlist`` prints ``CANNED`` (and logs each call)."""
    root = workdir("sf-pm2rpc-")
    home = root / "pm2"
    home.mkdir()
    log = root / "calls.log"
    log.touch()
    stub = root / "bin" / "pm2"
    stub.parent.mkdir()
    stub.write_text(
        f"#!/bin/sh\necho \"$1\" >> {log}\necho 'noise before the list'\n"
        f"echo '{json.dumps(CANNED)}'\n",
        encoding="utf-8",
    )
    stub.chmod(0o755)
    procs = []

    def start(mode):
        proc = subprocess.Popen(  # pylint: disable=consider-using-with
            [sys.executable, "-c", FAKE_DAEMON, str(home), mode, "PM2 v7.0.4: God Daemon"]
        )
        procs.append(proc)
        wait_for((home / "fake.pid").exists, 10, what="the fake daemon")
        return proc

    try:
        yield start, {"user": "root", "pm2_home": str(home), "pm2_bin": str(stub)}, log
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        subprocess.run(["rm", "-rf", str(root)], check=False)


@pytest.mark.parametrize("mode", ["nonsense", "silent", "no-socket"])
def test_a_socket_that_does_not_answer_right_falls_back_to_jlist(modules, fake_home, mode):
    start, kw, log = fake_home
    start(mode)
    modules.pm2.calls(reset=True)
    started = time.monotonic()
    procs = modules.pm2.list(**kw)
    seconds = time.monotonic() - started
    assert modules.pm2.calls()["commands"] == ["jlist"] and log.read_text().split() == ["jlist"]
    assert [(p["name"], p["pid"], p["status"], p["env_keys"]) for p in procs] == [
        ("api", 4321, "online", ["API_TOKEN"])
    ]
    assert SECRET not in json.dumps(procs)
    assert modules.pm2.mask(SECRET, user="root", pm2_home=kw["pm2_home"]) == "<secret>"
    assert seconds < 10, seconds  # a silent socket costs its timeout (3 s), then the CLI
    print(f"\n{mode}: fell back to the CLI in {seconds:.2f}s")


def test_a_socket_served_by_another_process_is_not_asked(modules, fake_home):
    """The socket's peer must be the daemon of pm2.pid: a socket served by another process (one
    that answers well-formed, with its own list) is not used, and the CLI is run instead."""
    start, kw, log = fake_home
    start("impostor")
    sleeper = subprocess.Popen(  # pylint: disable=consider-using-with
        [sys.executable, "-c", "import time; time.sleep(60)", "PM2 v7.0.4: God Daemon"]
    )
    try:
        with open(os.path.join(kw["pm2_home"], "pm2.pid"), "w", encoding="ascii") as handle:
            handle.write(str(sleeper.pid))
        # right after the exec the kernel may show an empty cmdline for a moment
        wait_for(lambda: modules.pm2.daemon_pid("root", kw["pm2_home"]), 10, what="the sleeper")
        modules.pm2.calls(reset=True)
        assert [p["name"] for p in modules.pm2.list(**kw)] == ["api"]
        assert modules.pm2.calls()["commands"] == ["jlist"] and log.read_text().split() == ["jlist"]
        # the same socket, its server now the daemon of pm2.pid: its answer is taken
        with open(os.path.join(kw["pm2_home"], "pm2.pid"), "w", encoding="ascii") as handle:
            handle.write(str(fake_pid(kw["pm2_home"])))
        assert [p["name"] for p in modules.pm2.list(refresh=True, **kw)] == ["impostor"]
        assert modules.pm2.calls()["commands"] == ["jlist", LIST_CALL]
    finally:
        sleeper.kill()
        sleeper.wait()
