"""
serverfix: formula-level checks for the Redis/queue fix of the intranet backend.

Pillar validation and the preflight that runs before any state changes the system.
Runs inside the minion's own Python: standard library and salt only.
"""

import difflib
import logging
import re
import socket

log = logging.getLogger(__name__)

__virtualname__ = "serverfix"

PILLAR_KEY = "serverfix"
SECRET = "<secret>"

# npm dotenv only reads keys made of these characters (anything else is silently ignored).
ENV_KEY_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)
REDIS_MEMORY_RE = re.compile(r"^\d+(?:[kmg]b?)?$", re.IGNORECASE)
PM2_NAME_RE = re.compile(r"^[A-Za-z0-9_.@:+-][A-Za-z0-9_.@:+ -]*$")
UNIT_FACTORS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def __virtual__():
    return __virtualname__


class _Rule:
    """One pillar value's expected form: a checker plus the words that describe it."""

    def __init__(self, expected, check, secret=False):
        self.expected = expected
        self.check = check
        self.secret = secret


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _int_rule(low, high, example):
    def check(value):
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        return _is_int(value) and low <= value <= high

    return _Rule(f"an integer from {low} to {high} (e.g. {example})", check)


def _single_line(value):
    return isinstance(value, str) and "\n" not in value and "\r" not in value and "\0" not in value


def _str_rule(expected, pattern=None, allow_empty=True, secret=False):
    def check(value):
        if _is_int(value) and pattern is None:
            value = str(value)
        if not _single_line(value):
            return False
        if not value:
            return allow_empty
        return pattern is None or bool(re.match(pattern, value))

    return _Rule(expected, check, secret=secret)


def _choice_rule(*choices):
    return _Rule("one of " + ", ".join(repr(c) for c in choices), lambda v: v in choices)


def _list_rule(item_rule, expected):
    def check(value):
        return isinstance(value, list) and all(item_rule.check(item) for item in value)

    return _Rule(expected, check)


BOOL = _Rule("true or false", lambda v: isinstance(v, bool))
ABS_PATH = _str_rule("an absolute path on one line (e.g. /var/www/intranet/backend/.env)",
                     pattern=r"^/", allow_empty=False)
OPT_ABS_PATH = _str_rule("an absolute path on one line, or '' to find it on PATH", pattern=r"^/")
NAME = _str_rule("a name on one line without spaces (e.g. root)", pattern=r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*$")
MODE = _str_rule("an octal file mode as a string (e.g. '0640')", pattern=r"^0?[0-7]{3}$", allow_empty=False)
ENV_KEY = _str_rule("a .env key of letters, digits, '_', '.', '-' only (npm dotenv ignores others)",
                    pattern=ENV_KEY_RE.pattern, allow_empty=False)
PM2_NAME = _Rule(
    "a pm2 process name that is not 'all', not a number and has no newline",
    lambda v: _single_line(v) and bool(PM2_NAME_RE.match(v)) and v != "all" and not v.isdigit(),
)
HOSTNAME = _str_rule("a host name or IP address on one line (e.g. 127.0.0.1)",
                     pattern=r"^[A-Za-z0-9_.:-]+$", allow_empty=False)
BIND_ADDR = _str_rule("an IP address, optionally prefixed with '-' (optional) or '!' (e.g. 127.0.0.1, -::1)",
                      pattern=r"^[-!]?[0-9A-Fa-f.:*]+$", allow_empty=False)
SIZE = _Rule(
    "a size such as 2G, 512M or 1048576K (an integer with K, M, G or T)",
    lambda v: (_is_int(v) and v > 0) or (isinstance(v, str) and bool(SIZE_RE.match(v)) and parse_size(v) > 0),
)


def _env_value_check(value):
    if isinstance(value, bool) or value is None:
        return False
    return isinstance(value, (str, int, float))


ENV_VALUE = _Rule("a string or number (lists, mappings and null cannot be written to a .env)", _env_value_check)


def _extra_check(value):
    return isinstance(value, dict) and all(ENV_KEY.check(k) and ENV_VALUE.check(v) for k, v in value.items())


PILLAR_SCHEMA = {
    "dotenv": {
        "file": ABS_PATH,
        "create": BOOL,
        "user": _str_rule("a user name, or '' to keep the file's owner", pattern=r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*$"),
        "group": _str_rule("a group name, or '' to keep the file's group", pattern=r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*$"),
        "mode": MODE,
        "backup_keep": _int_rule(1, 1000, 5),
        "secret_keys": _list_rule(ENV_KEY, "a list of .env keys (e.g. [JWT_SECRET])"),
        "extra": _Rule("a mapping of .env keys (letters, digits, '_', '.', '-') to strings or numbers", _extra_check),
    },
    "redis": {
        "enabled": BOOL,
        "pkg": NAME,
        "service": NAME,
        "config": ABS_PATH,
        "host": HOSTNAME,
        "bind": _Rule("a non-empty list of IP addresses (e.g. [127.0.0.1, -::1])",
                      lambda v: isinstance(v, list) and bool(v) and all(BIND_ADDR.check(a) for a in v)),
        "port": _int_rule(1, 65535, 6379),
        "password": _str_rule("a single-line string without spaces or quotes, or '' for none",
                              pattern=r"^[^\s\"']*$", secret=True),
        "db": _int_rule(0, 15, 0),
        "maxmemory": _Rule("'' (no limit) or a Redis memory size such as 256mb or 1gb",
                           lambda v: v == "" or (_is_int(v) and v >= 0) or
                           (isinstance(v, str) and bool(REDIS_MEMORY_RE.match(v)))),
        "maxmemory_policy": _choice_rule("noeviction", "allkeys-lru", "volatile-lru", "allkeys-lfu",
                                         "volatile-lfu", "allkeys-random", "volatile-random", "volatile-ttl"),
        "appendonly": BOOL,
        "appendfsync": _choice_rule("always", "everysec", "no"),
    },
    "queue": {
        "enabled": BOOL,
        "concurrency": _int_rule(1, 1000, 5),
    },
    "pm2": {
        "user": NAME,
        "home": ABS_PATH,
        "bin": OPT_ABS_PATH,
    },
    "remove_processes": _list_rule(PM2_NAME, "a list of pm2 process names (e.g. [prisma-studio])"),
    "swap": {
        "enabled": BOOL,
        "file": ABS_PATH,
        "size": SIZE,
        "swappiness": _int_rule(0, 200, 10),
        "vfs_cache_pressure": _int_rule(0, 1000, 50),
        "sysctl_file": _str_rule("an absolute path under /etc/sysctl.d/ ending in .conf",
                                 pattern=r"^/etc/sysctl\.d/[^/]+\.conf$", allow_empty=False),
    },
    "backend": {
        "name": PM2_NAME,
        "restart": BOOL,
        "force_restart": BOOL,
        "ready_patterns": _list_rule(_str_rule("a log line pattern", allow_empty=False),
                                     "a list of single-line log substrings"),
        "ready_timeout": _int_rule(1, 3600, 60),
        "rollback": BOOL,
        "shadowed_env": _choice_rule("fail", "warn"),
    },
    "verify": {
        "enabled": BOOL,
        "url": _str_rule("'' (no probe) or an http:// URL on this host (e.g. http://127.0.0.1:3000/health)",
                         pattern=r"^https?://"),
        "requests": _int_rule(1, 1000, 10),
        "limit_ms": _int_rule(1, 600000, 100),
    },
}


def parse_size(size):
    """
    Return a size such as ``2G``, ``512M``, ``64MiB`` or ``1048576`` in bytes.

    Raises ``ValueError`` for anything else.

    CLI Example:

    .. code-block:: bash

        salt '*' serverfix.parse_size 2G
    """
    if isinstance(size, int) and not isinstance(size, bool):
        return size
    match = SIZE_RE.match(str(size))
    if not match:
        raise ValueError(f"{size!r} is not a size such as 2G or 512M")
    return int(match.group(1)) * UNIT_FACTORS[match.group(2).upper()]


def _suggest(key, known):
    close = difflib.get_close_matches(str(key), list(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _show(value, rule):
    return SECRET if rule.secret else repr(value)


def validate_pillar(pillar=None):
    """
    Check the ``serverfix`` pillar against the formula's contract.

    Returns a list of messages, one per problem, each naming the pillar key, the bad value
    (``<secret>`` for secrets) and the expected form. An empty list means the pillar is valid.
    Unknown keys are reported with the closest known key (a likely typo).

    pillar
        The ``serverfix`` pillar mapping to check; by default the minion's own pillar.

    CLI Example:

    .. code-block:: bash

        salt '*' serverfix.validate_pillar
        salt-call --local serverfix.validate_pillar pillar='{"redis": {"port": 70000}}'
    """
    if pillar is None:
        pillar = __pillar__.get(PILLAR_KEY, {})  # pylint: disable=undefined-variable
    if pillar in (None, ""):
        return []
    if not isinstance(pillar, dict):
        return [f"{PILLAR_KEY}: {pillar!r} is not valid; expected a mapping of settings (see pillar.example)"]
    errors = []
    for section, value in pillar.items():
        where = f"{PILLAR_KEY}:{section}"
        if section not in PILLAR_SCHEMA:
            errors.append(f"{where}: unknown key{_suggest(section, PILLAR_SCHEMA)}; "
                          f"known keys: {', '.join(PILLAR_SCHEMA)}")
            continue
        spec = PILLAR_SCHEMA[section]
        if isinstance(spec, _Rule):
            if not spec.check(value):
                errors.append(f"{where}: {_show(value, spec)} is not valid; expected {spec.expected}")
            continue
        if not isinstance(value, dict):
            errors.append(f"{where}: {value!r} is not valid; expected a mapping with keys {', '.join(spec)}")
            continue
        for key, sub_value in value.items():
            sub_where = f"{where}:{key}"
            if key not in spec:
                errors.append(f"{sub_where}: unknown key{_suggest(key, spec)}; known keys: {', '.join(spec)}")
            elif not spec[key].check(sub_value):
                errors.append(f"{sub_where}: {_show(sub_value, spec[key])} is not valid; "
                              f"expected {spec[key].expected}")
    return errors


def _has_ipv6_loopback():
    try:
        with open("/proc/net/if_inet6", encoding="ascii") as handle:
            return any(line.split()[0] == "0" * 31 + "1" for line in handle if line.strip())
    except OSError:
        return False


def redis_bind_addresses(bind=None):
    """
    Return the Redis ``bind`` addresses to write on this host.

    IPv6 addresses are dropped when the host has no IPv6 loopback (Redis would fail to start:
    the runbook's IPv4/IPv6 pitfall); ``-`` marks an address Redis may skip.

    bind
        List of addresses; by default the pillar's ``serverfix:redis:bind``.

    CLI Example:

    .. code-block:: bash

        salt '*' serverfix.redis_bind_addresses '["127.0.0.1", "-::1"]'
    """
    if bind is None:
        bind = __salt__["pillar.get"](f"{PILLAR_KEY}:redis:bind", ["127.0.0.1", "-::1"])  # pylint: disable=undefined-variable
    ipv6 = _has_ipv6_loopback()
    return [addr for addr in bind if ipv6 or ":" not in addr]


def _resolve(host, port):
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return None
    return sorted({info[4][0] for info in infos})


def check_redis_host(host, bind, port=6379):
    """
    Check that every address ``host`` resolves to is one Redis listens on.

    Returns an error message, or ``''`` when the bind covers the host. ``localhost`` may
    resolve to ``::1`` first while Redis listens on 127.0.0.1 only: the runbook's IPv4/IPv6 pitfall.

    CLI Example:

    .. code-block:: bash

        salt '*' serverfix.check_redis_host localhost '["127.0.0.1"]'
    """
    addresses = _resolve(host, port)
    if addresses is None:
        return (f"{PILLAR_KEY}:redis:host: {host!r} does not resolve on this host; "
                "use 127.0.0.1 (the default)")
    listen = {addr.lstrip("-!") for addr in redis_bind_addresses(bind)}
    if listen & {"*", "0.0.0.0", "::", "*::"}:  # wildcard binds cover everything (not loopback-only!)
        return ""
    missing = [addr for addr in addresses if addr not in listen]
    if missing:
        return (f"{PILLAR_KEY}:redis:host: {host!r} resolves to {', '.join(addresses)} but Redis will listen "
                f"on {', '.join(sorted(listen))} only ({', '.join(missing)} not covered: the IPv4/IPv6 "
                "localhost pitfall); set serverfix:redis:host to 127.0.0.1 or add the address to serverfix:redis:bind")
    return ""


def _module_preflight(module, **kwargs):
    """Run ``<module>.preflight`` when that module is loaded; its messages are read-only findings."""
    func = f"{module}.preflight"
    if func not in __salt__:  # pylint: disable=undefined-variable
        return []
    return list(__salt__[func](**kwargs) or [])  # pylint: disable=undefined-variable


def preflight(config, pillar=None):
    """
    Every check that must pass before the formula changes anything; read-only.

    Validates the raw pillar, then the merged settings (``config``, from map.jinja): that
    ``redis:host`` is covered by the Redis bind, and asks the ``dotenv``, ``pm2`` and
    ``swapfile`` modules for problems with the files and tools their phases need.
    Returns a list of messages; empty means all clear.

    config
        The merged settings (defaults.yaml + pillar), as the SLS files see them.
    pillar
        The raw ``serverfix`` pillar; by default the minion's own.

    CLI Example:

    .. code-block:: bash

        salt '*' serverfix.preflight "$(salt-call --local --out=json slsutil.renderer ...)"
    """
    errors = validate_pillar(pillar)
    if errors:
        return errors  # the merged settings are not trustworthy past this point
    redis = config["redis"]
    if redis["enabled"]:
        message = check_redis_host(redis["host"], redis["bind"], redis["port"])
        if message:
            errors.append(message)
    pm2 = config["pm2"]
    if config["remove_processes"] or config["backend"]["restart"]:
        errors += _module_preflight("pm2", user=pm2["user"], pm2_home=pm2["home"], pm2_bin=pm2["bin"])
    dotenv = config["dotenv"]
    errors += _module_preflight("dotenv", path=dotenv["file"], create=dotenv["create"])
    swap = config["swap"]
    if swap["enabled"]:
        errors += _module_preflight("swapfile", path=swap["file"], size=swap["size"])
    return errors

