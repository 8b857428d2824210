"""
redis_server: edit ``redis.conf`` in place and talk to Redis over its own protocol.

Phase 1 of the runbook. The config is edited directive by directive (Debian's defaults and
comments stay); the server is checked with a real ``PING`` over a socket, so no password
ever lands in a process's argv. Everything it needs (the password too) comes as an argument.

Errors follow Salt's contract: a file that cannot be read or written, a Redis that cannot be
reached or answers with an error raise ``CommandExecutionError`` with the path or the address;
no ``OSError`` escapes. Standard library and salt only.
"""

import glob
import logging
import os
import socket
import subprocess
import tarfile
import tempfile
import time
from typing import TYPE_CHECKING, Any

import salt.utils.systemd
from salt.exceptions import CommandExecutionError

if TYPE_CHECKING:
    __salt__: dict[str, Any]
    __utils__: dict[str, Any]
    __context__: dict[str, Any]

log = logging.getLogger(__name__)

__virtualname__ = "redis_server"


def __virtual__():
    return __virtualname__


def _conf(name):
    """A helper of ``serverfix_redisconf`` (redis.conf as Redis reads it)."""
    return __utils__[f"serverfix_redisconf.{name}"]


def _has_ipv6_loopback():
    try:
        with open("/proc/net/if_inet6", encoding="ascii") as handle:
            return any(line.split()[0] == "0" * 31 + "1" for line in handle if line.strip())
    except OSError:
        return False


def bind_addresses(bind):
    """
    Return the ``bind`` addresses Redis can use on this host.

    IPv6 addresses are dropped when the host has no IPv6 loopback (Redis would fail to start:
    the runbook's IPv4/IPv6 pitfall); ``-`` marks an address Redis may skip.

    bind
        List of addresses, e.g. ``["127.0.0.1", "-::1"]``.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_server.bind_addresses '["127.0.0.1", "-::1"]'
    """
    ipv6 = _has_ipv6_loopback()
    return [addr for addr in bind if ipv6 or ":" not in addr]


def config_get(path="/etc/redis/redis.conf", mask=True, includes=True):
    """
    Return the active directives Redis reads from a redis.conf as ``{directive: value}`` (the
    last one wins, as in Redis). ``include`` lines are followed where they stand (globs too,
    relative paths from Redis's working directory, as Redis does) unless ``includes=False``.
    Values of ``requirepass``/``masterauth`` are masked unless ``mask=False`` (an empty one
    stays empty). Raises ``CommandExecutionError`` when a file cannot be read.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_server.config_get /etc/redis/redis.conf
    """
    if includes:
        found = _conf("effective")(path)
    else:
        found = {
            key: (args, path)
            for key, args in filter(None, map(_conf("split"), _conf("read_lines")(path)))
        }
    return {key: _conf("shown")(key, " ".join(args), mask) for key, (args, _) in found.items()}


def config_plan(path, settings):
    """
    Plan an in-place edit of ``path`` so its active directives match ``settings``.

    ``settings`` maps a directive to its value (a string); ``None`` removes the directive
    (its active lines are commented out). Returns ``{"content": new text, "changes":
    {directive: {"old": ..., "new": ...}}}``; secrets are masked in ``changes``.
    Nothing is written. Raises ``CommandExecutionError`` when ``path`` cannot be read.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_server.config_plan /etc/redis/redis.conf '{"maxmemory-policy": "noeviction"}'
    """
    return __utils__["serverfix_redisconf.plan"](path, settings)


def config_set(path, settings, backup_keep=5, backup_dir="/var/backups/serverfix"):
    """
    Edit ``path`` in place so its active directives match ``settings`` (see ``config_plan``).

    Writes atomically with the file's mode and owner, after a 0600 backup below ``backup_dir``
    (``path`` mirrored; ``''``: next to it). Returns the (masked) changes; ``{}`` when none. Raises
    ``CommandExecutionError`` when the file cannot be read, backed up or written (it is then
    unchanged).

    CLI Example:

    .. code-block:: bash

        salt '*' redis_server.config_set /etc/redis/redis.conf '{"appendonly": "yes"}'
    """
    plan = config_plan(path, settings)
    if plan["changes"]:
        try:
            __utils__["serverfix_files.backup"](path, keep=backup_keep, backup_dir=backup_dir)
            __utils__["serverfix_files.atomic_write"](
                path, plan["content"].encode("utf-8", "surrogateescape")
            )
        except OSError as exc:
            raise CommandExecutionError(
                f"{path}: cannot write it ({exc.strerror}); the file is unchanged."
            ) from None
    return plan["changes"]


def preflight(path="/etc/redis/redis.conf", password="", allow_remove=False):
    """
    Read-only check before an edit of ``path``: an empty ``password`` must not switch off the
    authentication Redis has now. When ``requirepass`` is set (in ``path`` or a file it
    includes) and ``password`` is empty, the edit would comment it out and let anyone on the
    bind addresses in; that needs ``allow_remove=True``. A missing ``path`` (Redis not installed
    yet) is fine. ``password`` only counts as set or empty here (a pillar reference is set).

    Returns True; else raises one ``CommandExecutionError`` with the problems in
    ``info["errors"]`` (and ``info["arguments"]``: the argument each is about).

    CLI Example:

    .. code-block:: bash

        salt '*' redis_server.preflight /etc/redis/redis.conf password=''
    """
    if password or allow_remove or not os.path.exists(path):
        return True
    args, source = _conf("effective")(path).get("requirepass", (None, path))
    if args is None or _conf("unquote")(" ".join(args)) == "":
        return True
    where = path if source == path else f"{source} (included by {path})"
    problem = (
        f"{where} sets requirepass, but password is empty: the edit would switch Redis's "
        "authentication off. Give the current (or a new) password as password, or "
        "allow_remove=True to remove it on purpose"
    )
    __utils__["serverfix_errors.raise_problems"]([problem], arguments=["password"])
    return True  # not reached: raise_problems raises for a non-empty list


def _bind_host(bind):
    """An address to reach a Redis bound to ``bind`` (its first address) from this host."""
    first = (bind or "127.0.0.1").split()[0].lstrip("-!")
    return {"*": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1", "::*": "::1"}.get(first, first)


def _live(path, host=None, port=None, password=None):
    """``(host, port, password)`` of the running Redis of ``path``: first the connection its
    config gives now, then the one given (a config already edited by an interrupted run). A
    server counts only when its ``INFO server`` names ``path`` as its config file."""
    candidates = []
    try:
        cfg = config_get(path, mask=False)
        candidates.append(
            (_bind_host(cfg.get("bind")), int(cfg.get("port") or 6379), cfg.get("requirepass"))
        )
    except (CommandExecutionError, ValueError):
        pass
    if port:
        candidates.append((host or "127.0.0.1", int(port), password))
    wanted = os.path.realpath(path)
    for cand_host, cand_port, cand_password in dict.fromkeys(candidates):
        secret = _conf("unquote")(cand_password or "") or None
        try:
            info = _info(cand_host, cand_port, secret, "server")
        except CommandExecutionError:
            continue
        if os.path.realpath(info.get("config_file") or "/") == wanted:
            return cand_host, cand_port, secret
    return None


def _info(host, port, password, section):
    reply = command("INFO", section, host=host, port=port, password=password)
    fields = (line.split(":", 1) for line in (reply or "").splitlines() if ":" in line)
    return {key: value.strip() for key, value in fields}


def _key_count(host, port, password):
    keyspace = _info(host, port, password, "keyspace")
    # db0:keys=200,expires=0,avg_ttl=0
    return sum(int(value.split(",")[0].split("=")[1]) for value in keyspace.values())


def aof_status(path="/etc/redis/redis.conf", host=None, port=None, password=None):
    """
    What the running Redis of ``path`` has now, for a switch to ``appendonly yes``:
    ``{"running": bool, "address": "host:port", "appendonly": "yes"/"no", "keys": int,
    "rdb": path}``. The server is reached with the connection ``path`` gives now, else with
    ``host``/``port``/``password`` (AUTH inside the socket). When it is not running, ``rdb`` is
    the RDB file holding data that a start with ``appendonly yes`` and no AOF yet would ignore
    (redis/redis#12484), else ``None``. Read-only.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_server.aof_status /etc/redis/redis.conf
    """
    live = _live(path, host, port, password)
    if live:
        appendonly = command(
            "CONFIG", "GET", "appendonly", host=live[0], port=live[1], password=live[2]
        )
        return {
            "running": True,
            "address": f"{live[0]}:{live[1]}",
            "appendonly": appendonly[1] if len(appendonly or []) == 2 else None,
            "keys": _key_count(*live),
            "rdb": None,
        }
    status = {"running": False, "address": None, "appendonly": None, "keys": None, "rdb": None}
    try:
        cfg = config_get(path, mask=False)
    except CommandExecutionError:
        return status
    data_dir = os.path.join("/", _conf("unquote")(cfg.get("dir", "/")))
    rdb = os.path.join(data_dir, _conf("unquote")(cfg.get("dbfilename", "dump.rdb")))
    aof = os.path.join(data_dir, _conf("unquote")(cfg.get("appenddirname", "appendonlydir")))
    if os.path.isfile(rdb) and os.path.getsize(rdb) > 0 and not os.path.exists(aof):
        status["rdb"] = rdb
    return status


def aof_enable(path="/etc/redis/redis.conf", host=None, port=None, password=None, timeout=300):
    """
    Switch the running Redis of ``path`` to AOF without losing data, as upstream advises
    (redis/redis#12484): ``CONFIG SET appendonly yes``, then wait until ``INFO persistence``
    shows ``aof_enabled:1``, no rewrite in progress or scheduled, and
    ``aof_last_bgrewrite_status:ok``: the AOF then holds every key, and a restart with
    ``appendonly yes`` in the config loads them. Nothing is written to ``path``. The server is
    found as in :func:`aof_status`. Returns ``{"address": "host:port", "keys": int}``; raises
    ``CommandExecutionError`` when Redis cannot be reached, refuses, or the rewrite fails or
    takes longer than ``timeout`` seconds.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_server.aof_enable /etc/redis/redis.conf
    """
    live = _live(path, host, port, password)
    if not live:
        raise CommandExecutionError(f"the Redis of {path} does not answer; AOF not switched on")
    address = f"{live[0]}:{live[1]}"
    try:
        command("CONFIG", "SET", "appendonly", "yes", host=live[0], port=live[1], password=live[2])
    except CommandExecutionError as exc:
        raise CommandExecutionError(f"{address}: CONFIG SET appendonly yes: {exc.error}") from None
    deadline = time.monotonic() + float(timeout)
    while True:
        info = _info(*live, "persistence")
        if (
            info.get("aof_enabled"),
            info.get("aof_rewrite_in_progress"),
            info.get("aof_rewrite_scheduled", "0"),
        ) == ("1", "0", "0"):
            break
        if time.monotonic() >= deadline:
            raise CommandExecutionError(
                f"{address}: the AOF rewrite did not finish within {timeout}s; "
                f"{path} is unchanged (check the Redis log, then run again)"
            )
        time.sleep(0.1)
    if info.get("aof_last_bgrewrite_status") != "ok":
        raise CommandExecutionError(
            f"{address}: the AOF rewrite failed (aof_last_bgrewrite_status:"
            f"{info.get('aof_last_bgrewrite_status')}); {path} is unchanged: check the Redis log"
        )
    return {"address": address, "keys": _key_count(*live)}


def package_default_plan(pkg, path, settings):
    """
    Plan the edit against the config file that package ``pkg`` would install at ``path``, for a
    test-mode preview on a host where the package is not installed yet. The ``.deb`` is
    downloaded into a temp directory and read there; nothing on the system changes.
    Returns ``config_plan``'s result, or ``None`` when the package file cannot be had (no
    apt, no download, no such file in the package).

    CLI Example:

    .. code-block:: bash

        salt '*' redis_server.package_default_plan redis-server /etc/redis/redis.conf \\
            '{"appendonly": "yes"}'
    """
    try:
        return _plan_from_deb(pkg, path, settings)
    except (OSError, tarfile.TarError) as exc:
        log.debug("package_default_plan %s: %s", pkg, exc)
        return None


def _plan_from_deb(pkg, path, settings):
    with tempfile.TemporaryDirectory(prefix="serverfix-deb-") as tmp:
        download = subprocess.run(
            ["apt-get", "download", pkg], cwd=tmp, capture_output=True, check=False
        )
        debs = glob.glob(os.path.join(tmp, "*.deb"))
        if download.returncode != 0 or not debs:
            log.debug("apt-get download %s failed: %s", pkg, download.stderr[-500:])
            return None
        tar_path = os.path.join(tmp, "data.tar")
        with open(tar_path, "wb") as handle:
            if subprocess.run(
                ["dpkg-deb", "--fsys-tarfile", debs[0]], stdout=handle, check=False
            ).returncode:
                return None
        conf = os.path.join(tmp, "default.conf")
        with tarfile.open(tar_path) as archive, open(conf, "wb") as handle:
            try:
                handle.write(archive.extractfile("." + path).read())
            except KeyError:
                return None
        return config_plan(conf, settings)


def _encode(*args):
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode("utf-8")
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _read_reply(stream):
    line = stream.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("connection closed by Redis")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        return RedisError(rest.decode(errors="replace"))
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        data = stream.read(size + 2)
        return data[:-2].decode("utf-8", "replace")
    if kind == b"*":
        count = int(rest)
        return None if count < 0 else [_read_reply(stream) for _ in range(count)]
    raise ConnectionError(f"unexpected reply from Redis: {line[:40]!r}")


class RedisError(str):
    """An error reply (``-ERR ...``) from Redis."""


def command(*args, host="127.0.0.1", port=6379, password=None, timeout=2.0):
    """
    Send one command to Redis (after ``AUTH`` when ``password`` is set) and return its reply.

    Speaks the Redis protocol over a TCP socket: no client binary, no password in any argv.
    Raises ``CommandExecutionError`` when Redis cannot be reached (the message is the reason,
    e.g. ``Connection refused``) or answers with an error (``Redis answered NOAUTH ...``).

    CLI Example:

    .. code-block:: bash

        salt '*' redis_server.command CONFIG GET maxmemory-policy
    """
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as sock:
            stream = sock.makefile("rb")
            if password:
                sock.sendall(_encode("AUTH", password))
                _raise_error_reply(_read_reply(stream))
            sock.sendall(_encode(*args))
            return _raise_error_reply(_read_reply(stream))
    except (OSError, ValueError) as exc:  # ConnectionError is an OSError
        raise CommandExecutionError(getattr(exc, "strerror", None) or str(exc)) from None


def _raise_error_reply(reply):
    if isinstance(reply, RedisError):
        raise CommandExecutionError(f"Redis answered {reply}")
    return reply


def ping(host="127.0.0.1", port=6379, password=None, timeout=2.0):
    """
    Ask Redis ``PING`` (after ``AUTH`` with ``password`` when one is given); True on ``PONG``.

    The password is sent inside the socket, never in argv, the result or a message. Raises
    ``CommandExecutionError`` naming ``host:port`` and the reason (``Connection refused``,
    ``Redis answered NOAUTH``, an unexpected reply) otherwise.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_server.ping
        salt '*' redis_server.ping host=::1 port=6379
    """
    try:
        reply = command("PING", host=host, port=port, password=password, timeout=timeout)
    except CommandExecutionError as exc:
        reason = exc.error
        if reason.startswith("Redis answered "):  # the code only: an AUTH error may echo input
            reason = " ".join(reason.split()[:3])
        raise CommandExecutionError(f"{host}:{port}: {reason}") from None
    if reply != "PONG":
        raise CommandExecutionError(f"{host}:{port}: unexpected reply {reply!r}")
    return True


def wait_pong(host="127.0.0.1", port=6379, password=None, timeout=10.0):
    """
    Retry ``PING`` until ``PONG`` or ``timeout`` seconds pass (a restarted Redis needs a moment
    to load its data). Returns True; raises the last :func:`ping` error after ``timeout``, or at
    once when Redis refuses the password.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_server.wait_pong timeout=5
    """
    deadline = time.monotonic() + float(timeout)
    while True:
        try:
            return ping(host=host, port=port, password=password)
        except CommandExecutionError as exc:
            if time.monotonic() >= deadline or "NOAUTH" in exc.error or "WRONGPASS" in exc.error:
                raise
        time.sleep(0.2)


def listening_addresses(port=6379):
    """
    Return the local addresses with a TCP socket listening on ``port`` (from /proc/net/tcp{,6}).

    CLI Example:

    .. code-block:: bash

        salt '*' redis_server.listening_addresses 6379
    """
    return sorted({address for address, _ in _listeners(port)})


def _listeners(port):
    """(address, socket inode) of every TCP socket listening on ``port``."""
    for name, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            with open(name, encoding="ascii") as handle:
                next(handle, None)  # the header line
                for line in handle:
                    fields = line.split()
                    address, hex_port = fields[1].split(":")
                    if fields[3] == "0A" and int(hex_port, 16) == int(port):
                        yield _hex_to_ip(address, width), fields[9]
        except OSError:
            continue


def port_owners(port=6379):
    """
    The processes listening on TCP ``port`` (any address), as ``[{pid, name, started}]``
    (``started``: epoch seconds). Read-only (/proc).

    CLI Example:

    .. code-block:: bash

        salt '*' redis_server.port_owners 6379
    """
    sockets = {f"socket:[{inode}]" for _, inode in _listeners(port)}
    try:
        with open("/proc/uptime", encoding="ascii") as handle:
            boot = time.time() - float(
                handle.read().split()[0]
            )  # 10 ms precision (/proc/stat's btime: 1 s)
    except OSError:
        return []
    ticks = os.sysconf("SC_CLK_TCK")
    owners = []
    for pid in filter(str.isdigit, os.listdir("/proc")) if sockets else ():
        try:
            if not any(
                os.readlink(f"/proc/{pid}/fd/{fd}") in sockets
                for fd in os.listdir(f"/proc/{pid}/fd")
            ):
                continue
            with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
                stat = handle.read()
        except OSError:
            continue
        rest = stat[stat.rindex(")") + 2 :].split()
        owners.append(
            {
                "pid": int(pid),
                "name": stat[stat.index("(") + 1 : stat.rindex(")")],
                "started": round(boot + int(rest[19]) / ticks, 2),
            }
        )  # field 22: start time in ticks
    return sorted(owners, key=lambda owner: owner["pid"])


def started_before(path="/etc/redis/redis.conf", name="redis-server"):
    """
    PIDs of the ``name`` processes listening on the port of the config at ``path`` that started
    before ``path`` last changed: they still run with an older config and need a restart.
    Read-only; other Redis instances (other ports) are not counted. Unlike a ``watch`` requisite
    this also sees a change made by an earlier, interrupted run, and it works over salt-ssh, whose
    master-side compile turns ``watch`` on a custom state into ``require``.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_server.started_before /etc/redis/redis.conf
    """
    try:
        changed = os.stat(path).st_mtime
        port = int(config_get(path).get("port", "6379"))
    except (OSError, ValueError, CommandExecutionError):
        return []
    return [
        o["pid"] for o in port_owners(port) if o["name"] == name[:15] and o["started"] < changed
    ]


def reset_failed(name="redis-server"):
    """
    Clear systemd's "failed" state of the ``name`` unit, so that the next start is tried again.

    With ``Restart=always`` (Debian's unit) a Redis that cannot start (its port taken) is restarted
    until systemd's start limit gives up; after that every ``systemctl start`` is refused for a
    while,
    even once the cause is fixed. Returns True when the unit was failed and is reset, False when
    there was nothing to reset or the host does not run systemd.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_server.reset_failed redis-server
    """
    if not salt.utils.systemd.booted(__context__):
        return False
    unit = name if name.endswith(".service") else f"{name}.service"
    if (
        __salt__["cmd.retcode"](
            ["systemctl", "is-failed", "--quiet", unit], python_shell=False, ignore_retcode=True
        )
        != 0
    ):
        return False
    return __salt__["cmd.retcode"](["systemctl", "reset-failed", unit], python_shell=False) == 0


def _hex_to_ip(address, width):
    raw = bytes.fromhex(address)
    if width == 8:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    # /proc stores IPv6 as four host-order 32-bit words
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)
