"""
The pm2 RPC client (``_utils/serverfix_pm2rpc.py``) against fault injection: a plain unix socket
server started here (not pm2) that answers with what a test gives it: a good reply, nonsense, an
error, another id, silence, a closed connection. Every answer it does not understand gives
``None`` (the caller then runs ``pm2 jlist``), quickly and without the reply in the log. The real
pm2 daemon is in tests/functional/modules/test_pm2_rpc.py.
"""

import json
import logging
import os
import socket
import struct
import threading
import time

import pytest

from tests.support.loader import import_salt_module
from tests.support.paths import UTILS_DIR

RPC = import_salt_module(UTILS_DIR / "serverfix_pm2rpc.py", "serverfix_pm2rpc_t")
SECRET = "tok-rpc-5e4d3c2b1a"
PROCS = [{"name": "api", "pid": 42, "pm2_env": {"status": "online", "env": {"TOKEN": SECRET}}}]


def _amp(*args):
    """An AMP message as amp/lib/encode.js packs it (version 1, then length-prefixed args)."""
    return bytes([0x10 | len(args)]) + b"".join(struct.pack(">I", len(a)) + a for a in args)


def _reply(request_id, body):
    return _amp(b"j:" + json.dumps(body).encode(), b"s:" + request_id.encode())


class FakeDaemon:
    """A unix socket server at ``<home>/rpc.sock``: reads one request, then ``answer(request)``
    (bytes to send, a list of pieces sent one by one, or None: silent until the client gives up)."""

    def __init__(self, home, answer):
        self.home, self.answer = home, answer
        self.requests = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(home / "rpc.sock"))
        self.server.listen(1)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        conn, _ = self.server.accept()
        with conn:
            data = conn.recv(65536)
            self.requests.append(data)
            out = self.answer(data) if data else b""
            if out is None:
                conn.recv(1)  # silent: until the client closes
            for chunk in [out] if isinstance(out, bytes) else out or []:
                try:
                    conn.sendall(chunk)
                except BrokenPipeError:  # the client gave up (what some tests want)
                    return
                time.sleep(0.01)

    def close(self):
        self.thread.join(5)  # it has served its one connection
        self.server.close()


def _request_id(data):
    # the last AMP argument of the request: b"s:<id>"
    meta, off, args = data[0], 1, []
    for _ in range(meta & 0xF):
        (size,) = struct.unpack(">I", data[off : off + 4])
        args.append(data[off + 4 : off + 4 + size])
        off += 4 + size
    return args[-1][2:].decode()


def _ask(tmp_path, answer, timeout=1.0, pid=None):
    daemon = FakeDaemon(tmp_path, answer)
    try:
        started = time.monotonic()
        got = RPC.monitor_data(str(tmp_path), os.getuid(), pid or os.getpid(), timeout=timeout)
        return got, time.monotonic() - started, daemon.requests
    finally:
        daemon.close()


def test_request_is_axon_rpc_framing():
    """What pm2's Client sends for getMonitorData({}): [j:{type,method,args}, s:id]."""
    data = RPC.request("1234:0")
    assert data[0] == 0x12  # version 1, two arguments
    first = struct.unpack(">I", data[1:5])[0]
    assert json.loads(data[5 + 2 : 5 + first]) == {
        "type": "call",
        "method": "getMonitorData",
        "args": [{}],
    }
    assert data[5 + first + 4 :] == b"s:1234:0" and _request_id(data) == "1234:0"


def test_a_good_reply_is_the_list(tmp_path):
    got, _, requests = _ask(tmp_path, _good)
    assert got == PROCS and len(requests) == 1


def test_a_reply_in_small_pieces_is_read_whole(tmp_path):
    def answer(req):
        data = _reply(_request_id(req), {"args": [PROCS * 500]})
        return [data[i : i + 7] for i in range(0, 42, 7)] + [data[42:]]

    got, _, _ = _ask(tmp_path, answer)
    assert got == PROCS * 500


def _good(req):
    return _reply(_request_id(req), {"args": [PROCS]})


NOT_UNDERSTOOD = {
    "nonsense bytes": lambda req: b"HTTP/1.1 400 Bad Request\r\n\r\n",
    "AMP version 2": lambda req: bytes([0x22]) + _good(req)[1:],
    "error reply": lambda req: _reply(_request_id(req), {"error": f"no {SECRET}"}),
    "another id": lambda req: _reply("other:1", {"args": [PROCS]}),
    "no list": lambda req: _reply(_request_id(req), {"args": [{"name": SECRET}]}),
    "empty args": lambda req: _reply(_request_id(req), {"args": []}),
    "not JSON": lambda req: _amp(b"j:{" + SECRET.encode(), b"s:" + _request_id(req).encode()),
    "a string body": lambda req: _amp(b"s:" + SECRET.encode(), b"s:" + _request_id(req).encode()),
    "three parts": lambda req: _amp(b"j:{}", b"s:x", b"s:" + _request_id(req).encode()),
    "cut short": lambda req: _good(req)[:-3],
    "closed at once": lambda req: b"",
    "silence": lambda req: None,
}


@pytest.mark.parametrize("what", sorted(NOT_UNDERSTOOD))
def test_a_reply_not_understood_is_none_and_not_logged(tmp_path, caplog, what):
    caplog.set_level(logging.DEBUG)
    got, seconds, _ = _ask(tmp_path, NOT_UNDERSTOOD[what], timeout=1.0)
    assert got is None, what
    assert seconds < 2.5, (what, seconds)  # a silent peer costs the timeout, never more
    assert SECRET not in caplog.text and "api" not in caplog.text
    assert "pm2 jlist instead" in caplog.text
    print(f"\n{what}: None in {seconds:.3f}s")


def test_a_server_that_is_not_the_daemon_is_not_asked(tmp_path):
    """The peer (SO_PEERCRED) must be the daemon's pid: another process's socket gets nothing."""
    got, _, requests = _ask(tmp_path, _good, pid=os.getpid() + 1)
    assert got is None and requests == [b""]  # connected, then closed without a request


def test_no_socket_is_none(tmp_path):
    assert RPC.monitor_data(str(tmp_path), os.getuid(), os.getpid()) is None
    assert RPC.monitor_data(str(tmp_path / "missing"), os.getuid(), os.getpid()) is None


def test_a_symlinked_socket_is_refused(tmp_path):
    """Never through a symlink: not one in PM2_HOME pointing at a socket elsewhere."""
    elsewhere = tmp_path / "elsewhere"
    home = tmp_path / "home"
    elsewhere.mkdir()
    home.mkdir()
    daemon = FakeDaemon(elsewhere, _good)
    try:
        (home / "rpc.sock").symlink_to(elsewhere / "rpc.sock")
        assert "not a socket" in RPC.socket_problem(str(home), os.getuid())
        assert RPC.monitor_data(str(home), os.getuid(), os.getpid()) is None
        assert not daemon.requests
    finally:
        with socket.socket(socket.AF_UNIX) as unblock:  # let the server thread end
            unblock.connect(str(elsewhere / "rpc.sock"))
        daemon.close()


@pytest.mark.skip_if_not_root
def test_a_regular_file_or_another_owner_is_refused(tmp_path):
    (tmp_path / "rpc.sock").write_text("not a socket", encoding="utf-8")
    assert "not a socket" in RPC.socket_problem(str(tmp_path), 0)
    (tmp_path / "rpc.sock").unlink()
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(tmp_path / "rpc.sock"))
        os.chown(tmp_path / "rpc.sock", 4242, 4242)
        assert "belongs to uid 4242" in RPC.socket_problem(str(tmp_path), 1000)
        assert RPC.socket_problem(str(tmp_path), 4242) == ""
        os.chown(tmp_path / "rpc.sock", 0, 0)
        assert RPC.socket_problem(str(tmp_path), 1000) == ""  # root's is fine
    finally:
        server.close()
