"""
The one read call of ``pm2 jlist`` made without the pm2 CLI: ``pm2 jlist`` is
``Client.executeRemote('getMonitorData', {})`` over the daemon's RPC socket
``$PM2_HOME/rpc.sock`` (axon req/rep, AMP framing), then ``JSON.stringify`` of the list. Asking
the daemon directly saves starting node and the whole pm2 CLI (~0.6 s per run).

Any failure (no socket, refused, timeout, a reply not understood, a newer pm2 speaking
differently) returns ``None`` and the caller runs ``pm2 jlist`` as before; it is logged at debug
without data (the list holds every app's environment, secrets included). Only a socket owned by
the PM2_HOME's user (or root) is used, never through a symlink, and only when the process on
the other end is that daemon (``SO_PEERCRED``: its pid and uid). Standard library only.

Reached as ``__utils__["serverfix_pm2rpc.monitor_data"]``.
"""

import json
import logging
import os
import socket
import stat
import struct
import time

log = logging.getLogger(__name__)

SOCKET_NAME = "rpc.sock"
METHOD = "getMonitorData"
TIMEOUT = 3.0  # seconds for connect + reply; pm2 jlist itself takes longer to start
AMP_VERSION = 1  # amp/lib/encode.js: meta byte = version << 4 | argc
MAX_REPLY = 256 * 1024 * 1024  # a list of many apps with big environments, not a runaway peer
PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class RpcError(Exception):
    """The daemon could not be asked, or its reply is not one this client understands."""


def encode(args):
    """An AMP message (amp/lib/encode.js) of ``args`` (bytes each)."""
    if not 0 < len(args) < 16:
        raise RpcError("an AMP message holds 1 to 15 arguments")
    out = [bytes([AMP_VERSION << 4 | len(args)])]
    for arg in args:
        out += [struct.pack(">I", len(arg)), arg]
    return b"".join(out)


def request(request_id):
    """The axon-rpc call ``getMonitorData({})`` as axon's req socket sends it: the JSON message,
    then the id the reply carries back (amp-message: ``j:`` JSON, ``s:`` string)."""
    call = {"type": "call", "method": METHOD, "args": [{}]}
    return encode([b"j:" + json.dumps(call).encode("utf-8"), b"s:" + request_id.encode("ascii")])


def _recv_exact(sock, size, deadline):
    chunks, left = [], size
    while left:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RpcError("no complete reply in time")
        sock.settimeout(remaining)
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise RpcError("the daemon closed the connection before a complete reply")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_message(sock, deadline):
    """One AMP message from ``sock``: its arguments as bytes (amp/lib/stream.js)."""
    meta = _recv_exact(sock, 1, deadline)[0]
    if meta >> 4 != AMP_VERSION or not meta & 0xF:
        raise RpcError(f"not an AMP v{AMP_VERSION} message (meta byte {meta:#04x})")
    args, total = [], 0
    for _ in range(meta & 0xF):
        (size,) = struct.unpack(">I", _recv_exact(sock, 4, deadline))
        total += size
        if total > MAX_REPLY:
            raise RpcError(f"reply larger than {MAX_REPLY} bytes")
        args.append(_recv_exact(sock, size, deadline))
    return args


def _unpack(arg):
    # amp-message: "j:" JSON, "s:" string, anything else a blob
    if arg[:2] == b"j:":
        return json.loads(arg[2:].decode("utf-8"))
    if arg[:2] == b"s:":
        return arg[2:].decode("utf-8")
    return arg


def parse_reply(args, request_id):
    """The process list from the reply ``[j:{"args": [list]}, s:<id>]`` (axon-rpc server.js);
    raises ``RpcError`` for an error reply, another id or any other shape (no reply data in the
    message)."""
    if len(args) != 2:
        raise RpcError(f"reply of {len(args)} parts, expected 2")
    body, reply_id = _unpack(args[0]), _unpack(args[1])
    if reply_id != request_id:
        raise RpcError("reply to another request id")
    if not isinstance(body, dict):
        raise RpcError("reply is not a JSON object")
    if "error" in body:
        raise RpcError("the daemon answered with an error")
    result = body.get("args")
    if not isinstance(result, list) or not result or not isinstance(result[0], list):
        raise RpcError("reply holds no process list")
    return result[0]


def socket_problem(pm2_home, uid):
    """Why ``$PM2_HOME/rpc.sock`` must not be used ('' when it may): it must be a socket itself
    (not a symlink to one) owned by ``uid`` or root."""
    try:
        st = os.lstat(os.path.join(pm2_home, SOCKET_NAME))
    except OSError as exc:
        return f"cannot stat {SOCKET_NAME}: {exc.strerror}"
    if not stat.S_ISSOCK(st.st_mode):
        return f"{SOCKET_NAME} is not a socket (a symlink or another file)"
    if st.st_uid not in (uid, 0):
        return f"{SOCKET_NAME} belongs to uid {st.st_uid}, not to the pm2 user (uid {uid}) or root"
    return ""


def peer_problem(sock, uid, pid):
    """Why the process at the other end of ``sock`` is not the daemon ``pid`` of ``uid``."""
    peer_pid, peer_uid, _ = PEERCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, PEERCRED.size)
    )
    if peer_uid != uid or peer_pid != pid:
        return f"the socket is served by pid {peer_pid} (uid {peer_uid}), not the daemon {pid}"
    return ""


def monitor_data(pm2_home, uid, pid, timeout=TIMEOUT):
    """
    The raw process list (as ``pm2 jlist`` prints it, environments included: keep it in memory
    only) from the daemon ``pid`` of the user ``uid`` in ``pm2_home``, or ``None`` when it
    cannot be had this way (the caller then runs ``pm2 jlist``).
    """
    started = time.monotonic()
    try:
        procs = _monitor_data(pm2_home, uid, pid, started + timeout)
    except (OSError, RpcError, ValueError) as exc:
        # the reason only, never the reply: it may hold environments
        if isinstance(exc, RpcError):
            reason = str(exc)
        else:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
        log.debug("pm2 rpc %s in %s not used (%s): pm2 jlist instead", METHOD, pm2_home, reason)
        return None
    log.debug(
        "pm2 rpc %s in %s: %d apps in %.3fs",
        METHOD,
        pm2_home,
        len(procs),
        time.monotonic() - started,
    )
    return procs


def _monitor_data(pm2_home, uid, pid, deadline):
    if os.geteuid() not in (0, uid):
        raise RpcError(f"this process (uid {os.geteuid()}) is neither root nor the pm2 user")
    # the directory by descriptor: the socket path stays short (108 bytes) and is PM2_HOME's
    dir_fd = os.open(pm2_home, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        problem = socket_problem(f"/proc/self/fd/{dir_fd}", uid)
        if problem:
            raise RpcError(problem)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            sock.connect(f"/proc/self/fd/{dir_fd}/{SOCKET_NAME}")
            # whatever the path led to, only the verified daemon is asked
            problem = peer_problem(sock, uid, pid)
            if problem:
                raise RpcError(problem)
            request_id = f"serverfix:{os.getpid()}:{time.monotonic_ns()}"
            sock.sendall(request(request_id))
            return parse_reply(read_message(sock, deadline), request_id)
    finally:
        os.close(dir_fd)
