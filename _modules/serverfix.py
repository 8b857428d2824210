"""
serverfix: formula-level checks for the Redis/queue fix of the intranet backend.

Pillar validation and the preflight that runs before any state changes the system.
Runs inside the minion's own Python: standard library and salt only.
"""

import difflib
import functools
import ipaddress
import logging
import os
import re
import socket
import statistics
import time
import urllib.error
import urllib.request

import salt.utils.data
import salt.utils.yaml
from salt.exceptions import CommandExecutionError, SaltException

log = logging.getLogger(__name__)

__virtualname__ = "serverfix"

PILLAR_KEY = "serverfix"
SECRET = "<secret>"

# npm dotenv only reads keys made of these characters (anything else is silently ignored).
ENV_KEY_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
REDIS_MEMORY_RE = re.compile(r"^\d+(?:[kmg]b?)?$", re.IGNORECASE)
PM2_NAME_RE = re.compile(r"^[A-Za-z0-9_.@:+-][A-Za-z0-9_.@:+ -]*$")


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

    # the item's own rule too: "['all'] is not valid" must say why ('all' is not a pm2 name)
    return _Rule(f"{expected}, each {item_rule.expected}", check)


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
def _positive_size(value):
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return False
    try:
        return __utils__["serverfix_size.parse_size"](value) > 0  # pylint: disable=undefined-variable
    except ValueError:
        return False


SIZE = _Rule(
    "a size such as 2G, 512M or 1048576K (an integer with K, M, G or T)",
    lambda v: _positive_size(v),
)


def _env_value_check(value):
    if isinstance(value, bool) or value is None:
        return False
    return isinstance(value, (str, int, float))


ENV_VALUE = _Rule("a string or number (lists, mappings and null cannot be written to a .env)", _env_value_check)


# the keys the formula writes itself: an `extra` key among them would fight the pillar's own setting
MANAGED_ENV_KEYS = ("REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD", "REDIS_DB", "QUEUE_ENABLED", "QUEUE_CONCURRENCY")


def _extra_check(value):
    return isinstance(value, dict) and all(
        ENV_KEY.check(k) and ENV_VALUE.check(v) and k not in MANAGED_ENV_KEYS for k, v in value.items())


PILLAR_SCHEMA = {
    "dotenv": {
        "file": ABS_PATH,
        "create": BOOL,
        "user": _str_rule("a user name, or '' to keep the file's owner", pattern=r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*$"),
        "group": _str_rule("a group name, or '' to keep the file's group", pattern=r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*$"),
        "mode": MODE,
        "backup_keep": _int_rule(1, 1000, 5),
        "secret_keys": _list_rule(ENV_KEY, "a list of .env keys (e.g. [JWT_SECRET])"),
        "extra": _Rule("a mapping of .env keys (letters, digits, '_', '.', '-'; not one the formula sets "
                       "from serverfix:redis/queue, e.g. REDIS_HOST) to strings or numbers", _extra_check),
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


def _suggest(key, known):
    close = difflib.get_close_matches(str(key), list(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _show(value, rule):
    return SECRET if rule.secret else repr(_plain(value))


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
        pillar = _plain(__pillar__.get(PILLAR_KEY, {}))  # pylint: disable=undefined-variable
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


def check_redis_host(host, bind, port=6379):
    """
    Check that every address ``host`` resolves to is one Redis listens on.

    Returns an error message, or ``''`` when the bind covers the host. ``localhost`` may
    resolve to ``::1`` first while Redis listens on 127.0.0.1 only: the runbook's IPv4/IPv6 pitfall.

    CLI Example:

    .. code-block:: bash

        salt '*' serverfix.check_redis_host localhost '["127.0.0.1"]'
    """
    addresses = _resolve_ordered(host, port)
    if not addresses:
        return (f"{PILLAR_KEY}:redis:host: {host!r} does not resolve on this host; "
                "use 127.0.0.1 (the default)")
    listen = {addr.lstrip("-!") for addr in __salt__["redis_server.bind_addresses"](bind)}  # pylint: disable=undefined-variable
    if listen & {"*", "0.0.0.0", "::", "*::"}:  # wildcard binds cover everything (not loopback-only!)
        return ""
    missing = [addr for addr in addresses if addr not in listen]
    if missing:
        return (f"{PILLAR_KEY}:redis:host: {host!r} resolves to {', '.join(addresses)} but Redis will listen "
                f"on {', '.join(sorted(listen))} only ({', '.join(missing)} not covered: the IPv4/IPv6 "
                "localhost pitfall); set serverfix:redis:host to 127.0.0.1 or add the address to serverfix:redis:bind")
    return ""


def _module_preflight(module, **kwargs):
    """Run ``<module>.preflight`` when that module is loaded; its problems are read-only findings."""
    func = f"{module}.preflight"
    if func not in __salt__:  # pylint: disable=undefined-variable
        return []
    try:
        found = __salt__[func](**kwargs)  # pylint: disable=undefined-variable
    except SaltException as exc:  # one error listing every problem in info["errors"]
        return __utils__["serverfix_errors.problems"](exc)  # pylint: disable=undefined-variable
    return list(found) if isinstance(found, list) else []  # pm2.preflight still returns its list


def preflight(config, pillar=None, phases=None):
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
    phases
        The formula's SLS files in this run, by short name (``redis``, ``env``, ``prisma_studio``,
        ``swap``, ``backend``): only their files and tools are checked, so that
        ``state.apply serverfix.redis`` does not need a ``.env`` yet. ``None``: all. The pillar is
        always checked in full.

    CLI Example:

    .. code-block:: bash

        salt '*' serverfix.preflight "$(salt-call --local --out=json slsutil.renderer ...)"
    """
    errors = validate_pillar(pillar)
    if errors:
        return errors  # the merged settings are not trustworthy past this point
    def in_run(*names):
        return phases is None or any(name in phases for name in names)

    redis = config["redis"]
    if redis["enabled"] and in_run("redis", "env"):   # the bind (Phase 1) must cover REDIS_HOST (Phase 2)
        message = check_redis_host(redis["host"], redis["bind"], redis["port"])
        if message:
            errors.append(message)
    pm2 = config["pm2"]
    if (config["remove_processes"] and in_run("prisma_studio")) or (config["backend"]["restart"] and in_run("backend")):
        errors += _module_preflight("pm2", user=pm2["user"], pm2_home=pm2["home"], pm2_bin=pm2["bin"])
    dotenv = config["dotenv"]
    if in_run("env"):
        errors += _module_preflight("dotenv", path=dotenv["file"], create=dotenv["create"])
    swap = config["swap"]
    if swap["enabled"] and in_run("swap"):
        errors += _module_preflight("swapfile", path=swap["file"], size=swap["size"])
    return errors


# --------------------------------------------------------------------------------------------
# diagnose / verify: the runbook's analysis ("Gefundene Probleme") and its final checks
# ("Verifizierung nach Fix", "Troubleshooting"), one read-only command each.
#
# Both only read: /proc, the .env (dotenv.read), pm2's list, dump and log (one jlist per run),
# Redis over its own protocol (redis_server), the service manager, swapfile.status.
# A module that is not loaded or a tool that fails becomes a finding; nothing raises.
#
# The JSON shapes of both returns are documented in the docstrings of diagnose() and verify()
# (`salt-call sys.doc serverfix.diagnose`).
#
# Secret values (REDIS_PASSWORD, serverfix:redis:password, serverfix:dotenv:secret_keys) never
# appear: evidence says only whether a secret is set and whether it matches.
# --------------------------------------------------------------------------------------------

__outputter__ = {"diagnose": "serverfix_report", "verify": "serverfix_report"}

REPORT_VERSION = 1
SEVERITY_ORDER = ("critical", "warning", "info")
VERIFY_CHECKS = ("redis-service", "redis-ping", "redis-loopback-only", "redis-eviction-policy", "env-keys",
                 "env-not-shadowed", "swap", "sysctl", "pm2-online", "pm2-removed", "backend-ready",
                 "memory", "http-probe")
MEMORY_LOW_PERCENT = 10       # MemAvailable below this share of RAM is a warning
REDIS_TIMEOUT = 1.0           # seconds per Redis connection: loopback answers in milliseconds
LOG_LINES = 200
PROBE_BUDGET = 1.0            # seconds for the whole HTTP probe, so verify stays under 2 s
SYSCTL_KEYS = {"vm.swappiness": "swappiness", "vm.vfs_cache_pressure": "vfs_cache_pressure"}
QUEUE_KEY = "QUEUE_ENABLED"

# The runbook's troubleshooting symptoms as the backend logs them, the findings that cause them
# and the runbook's fix for each.
LOG_SYMPTOMS = (
    {"id": "econnrefused", "pattern": "connect ECONNREFUSED",
     "causes": ("redis-not-running", "redis-host-mismatch"),
     "fix": "serverfix.redis: start Redis where REDIS_HOST/REDIS_PORT point, then restart the backend"},
    {"id": "queue-disabled", "pattern": "Queue-System ist deaktiviert",
     "causes": ("env-queue-config",),
     "fix": "serverfix.env: QUEUE_ENABLED=true in the .env, then restart the backend"},
    {"id": "workers-not-started", "pattern": "Redis nicht verfügbar - Workers werden nicht gestartet",
     "causes": ("redis-not-running", "redis-host-mismatch", "redis-auth-failed"),
     "fix": "serverfix.redis: make Redis answer PING, then restart the backend"},
)


def _kind(value):
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, (list, tuple)):
        return "list"
    return "scalar"


def _merge_settings(defaults, given):
    """map.jinja's merge: the pillar wins key by key; a value of the wrong kind keeps the default."""
    given = given if isinstance(given, dict) else {}
    merged = {}
    for section, default in defaults.items():
        value = given.get(section, default)
        if _kind(value) != _kind(default):
            value = default
        if isinstance(default, dict):
            value = {key: (value.get(key, sub) if _kind(value.get(key, sub)) == _kind(sub) else sub)
                     for key, sub in default.items()}
        merged[section] = value
    return merged


def _defaults():
    """defaults.yaml as shipped with the custom modules (also on a salt-ssh target)."""
    return __utils__["serverfix_defaults.defaults"]()  # pylint: disable=undefined-variable


def _plain(value):
    """A plain copy of pillar data: Salt 3008 wraps the pillar in masking containers, and
    ``pillar.get`` called from a module returns every value as ``**********``."""
    if isinstance(value, dict):
        return {key: _plain(sub) for key, sub in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(sub) for sub in value]
    return value


NO_PILLAR_SOURCE = ("defaults only: no serverfix pillar is visible here (salt-ssh module calls get no "
                    "pillar): pass config=, or run state.apply serverfix.verify, which gets it")


def _settings(config):
    """``(settings, pillar errors, source)``: ``config`` wins over the pillar, both over the defaults."""
    if isinstance(config, str):
        config = salt.utils.yaml.safe_load(config)
    if config is not None and not isinstance(config, dict):
        raise CommandExecutionError("config: expected the merged serverfix settings as a mapping (map.jinja)")
    defaults = _defaults()
    errors = []
    source = "config"
    if config is None:
        given = _plain(__pillar__.get(PILLAR_KEY))  # pylint: disable=undefined-variable
        source = "pillar" if given is not None else NO_PILLAR_SOURCE
        errors = validate_pillar(given)
        config = given if isinstance(given, dict) else {}
    return _merge_settings(defaults, config), errors, source


def _call(function, *args, **kwargs):
    """``(result, None)`` or ``(None, reason)``: a missing module or a failing tool becomes evidence."""
    if function not in __salt__:  # pylint: disable=undefined-variable
        module = function.split(".", 1)[0]
        return None, (f"the {module} execution module is not available here "
                      "(it ships with this formula: run saltutil.sync_modules)")
    try:
        return __salt__[function](*args, **kwargs), None  # pylint: disable=undefined-variable
    except OSError as exc:  # "Connection refused", not "[Errno 111] Connection refused"
        return None, f"{function}: {exc.strerror or exc}"
    except Exception as exc:  # pylint: disable=broad-except
        return None, f"{function}: {exc}"


def _fix(state=None, pillar=None, hint=""):
    return {"state": state, "pillar": pillar, "hint": hint}


def _finding(fid, severity, title, evidence, fix):
    return {"id": fid, "severity": severity, "title": title, "evidence": evidence, "fix": fix}


def _check(cid, status, title, evidence, fix=None):
    return {"id": cid, "status": status, "title": title, "evidence": evidence, "fix": fix or _fix()}


def _mb(num_bytes):
    return round(num_bytes / (1 << 20), 1)


def _resolve_ordered(host, port):
    """The addresses ``host`` resolves to, in the resolver's order (the order a Node client tries)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return []
    seen = []
    for info in infos:
        if info[4][0] not in seen:
            seen.append(info[4][0])
    return seen


def _is_loopback(address):
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


def _covered(address, listening):
    """True when a listener on one of ``listening`` accepts connections to ``address``."""
    if address in listening or "::" in listening:
        return True
    return "0.0.0.0" in listening and ":" not in address


def _wanted_env(cfg):
    """The .env keys and values Phase 2 writes, as strings (private: it holds the Redis password)."""
    redis, queue = cfg["redis"], cfg["queue"]
    wanted = {
        "REDIS_HOST": str(redis["host"]),
        "REDIS_PORT": str(redis["port"]),
        "REDIS_PASSWORD": str(redis["password"] or ""),
        "REDIS_DB": str(redis["db"]),
        QUEUE_KEY: "true" if queue["enabled"] else "false",
        "QUEUE_CONCURRENCY": str(queue["concurrency"]),
    }
    # as map.jinja's managed_env: the pillar's extra keys follow (the preflight refuses a clash)
    wanted.update({key: str(value) for key, value in (cfg["dotenv"]["extra"] or {}).items()})
    return wanted


class _Facts:
    """Everything diagnose and verify look at, each read at most once per run."""

    def __init__(self, cfg, proc_swaps="/proc/swaps", source="config"):
        self.cfg = cfg
        self.source = source
        self.proc_swaps = proc_swaps
        self.wanted = _wanted_env(cfg)
        listed = {"REDIS_PASSWORD"} | set(cfg["dotenv"]["secret_keys"] or [])
        # the dotenv module's rule (names with PASSWORD/SECRET/TOKEN/KEY too), else the listed keys
        self.secret_keys = listed | {key for key in self.wanted
                                     if _call("dotenv.is_secret", key, secret_keys=sorted(listed))[0]}
        pm2 = cfg["pm2"]
        self.pm2_args = {"user": pm2["user"], "pm2_home": pm2["home"]}
        self.backend_name = cfg["backend"]["name"]

    @functools.cached_property
    def env(self):
        """``(mapping, error)`` of the .env as npm dotenv reads it."""
        path = self.cfg["dotenv"]["file"]
        if not os.path.exists(path):
            return None, f"{path} does not exist (serverfix:dotenv:file)"
        return _call("dotenv.read", path)

    @functools.cached_property
    def env_mtime(self):
        try:
            return os.stat(self.cfg["dotenv"]["file"]).st_mtime
        except OSError:
            return None

    def secrets(self):
        """Every secret value known to this run, for the final scrub."""
        env = self.env[0] or {}
        values = [env.get(key) for key in self.secret_keys] + [self.cfg["redis"]["password"]]
        values += [self.wanted.get(key) for key in self.secret_keys]
        return {str(v) for v in values if v not in (None, "") and len(str(v)) >= 3}

    @functools.cached_property
    def redis_target(self):
        """Host, port and password the backend uses: the .env's REDIS_* keys; before Phase 2 wrote
        them, the pillar's (what Phase 2 will write)."""
        env = self.env[0] or {}
        redis = self.cfg["redis"]
        from_env = "REDIS_HOST" in env or "REDIS_PORT" in env
        port = env.get("REDIS_PORT", "")
        return {
            "host": env.get("REDIS_HOST") or str(redis["host"]),
            "port": int(port) if str(port).isdigit() and 0 < int(port) < 65536 else int(redis["port"]),
            # without REDIS_PASSWORD in its .env the backend sends no password
            "password": env.get("REDIS_PASSWORD", "") if from_env else str(redis["password"] or ""),
            "source": ".env" if from_env else "pillar",
        }

    @functools.cached_property
    def listening(self):
        return _call("redis_server.listening_addresses", self.redis_target["port"])

    @functools.cached_property
    def resolved(self):
        return _resolve_ordered(self.redis_target["host"], self.redis_target["port"])

    def _redis(self, *args):
        target = self.redis_target
        return _call("redis_server.command", *args, host=target["host"], port=target["port"],
                     password=target["password"], timeout=REDIS_TIMEOUT)

    @functools.cached_property
    def ping(self):
        """``{"ok", "reply", "error", "ms"}`` of one PING over the socket (AUTH first when a password is set)."""
        start = time.perf_counter()
        reply, error = self._redis("PING")
        elapsed = round((time.perf_counter() - start) * 1000, 1)
        if error is None and isinstance(reply, str) and reply != "PONG":
            error = f"Redis answered {reply.split()[0] if reply.split() else reply!r}"
        if error and ": " in error:  # "redis_server.command: [Errno 111] Connection refused" -> the reason
            error = error.split(": ", 1)[1]
        return {"ok": error is None and reply == "PONG", "reply": reply if error is None else None,
                "error": error, "ms": elapsed}

    @functools.cached_property
    def eviction_policy(self):
        """``(policy, error)``: what the running Redis says, else its config file (CONFIG may be renamed)."""
        if not self.ping["ok"]:
            return None, "Redis does not answer"
        reply, error = self._redis("CONFIG", "GET", "maxmemory-policy")
        if error is None and isinstance(reply, list) and len(reply) == 2:
            return reply[1], None
        conf, conf_error = _call("redis_server.config_get", self.cfg["redis"]["config"])
        if conf:  # Redis' default when the file does not set it
            return conf.get("maxmemory-policy", "noeviction"), None
        return None, f"CONFIG GET: {error or str(reply)[:60]!r}; {conf_error}"

    @functools.cached_property
    def package_installed(self):
        version, error = _call("pkg.version", self.cfg["redis"]["pkg"])
        return None if error else bool(version)

    @functools.cached_property
    def service_running(self):
        """``(True/False/None, error)`` from the service manager (systemctl is-active, ...)."""
        running, error = _call("service.status", self.cfg["redis"]["service"])
        return (None if error else bool(running)), error

    @functools.cached_property
    def service_enabled(self):
        enabled, error = _call("service.enabled", self.cfg["redis"]["service"])
        return (None if error else bool(enabled)), error

    @functools.cached_property
    def pm2(self):
        """``(processes, error)``: the one cached ``pm2 jlist`` of this run."""
        # refresh: a cached list from an earlier call in this process would be stale
        return _call("pm2.list", pm2_bin=self.cfg["pm2"]["bin"], refresh=True, **self.pm2_args)

    @functools.cached_property
    def saved(self):
        return _call("pm2.saved_names", **self.pm2_args)

    @functools.cached_property
    def backend(self):
        return next((p for p in self.pm2[0] or [] if p.get("name") == self.backend_name), None)

    @functools.cached_property
    def started(self):
        """The backend's last start (epoch seconds), or None."""
        uptime = (self.backend or {}).get("pm_uptime")
        return uptime / 1000 if uptime else None

    @functools.cached_property
    def logs(self):
        """``(files, error)``: per log file of the backend its path, lines and whether it was
        written since the backend's last start (lines carry no time: a file untouched since the
        start holds only older lines)."""
        if self.backend is None:
            return [], f"{self.backend_name} is not in pm2's list"
        paths, error = _call("pm2.log_paths", self.backend_name, pm2_bin=self.cfg["pm2"]["bin"], **self.pm2_args)
        files = []
        for path in paths or []:
            try:
                modified = os.stat(path).st_mtime
            except OSError:
                continue
            files.append({"path": path, "lines": __utils__["serverfix_files.tail_lines"](path, LOG_LINES),  # pylint: disable=undefined-variable
                          "since_start": self.started is not None and modified >= self.started})
        return files, error

    def masked(self, line):
        masked, _ = _call("pm2.mask", line, user=self.pm2_args["user"], pm2_home=self.pm2_args["pm2_home"])
        return (masked if masked is not None else line).strip()[:200]

    @functools.cached_property
    def log_state(self):
        """Ready lines and troubleshooting symptoms written since the backend's last start. A symptom
        counts unless every ready line follows it in the same file (each file is in time order): a
        reconnect ("Redis-Verbindung hergestellt") does not start the workers that were skipped."""
        ready = self.cfg["backend"]["ready_patterns"]
        ready_seen = {pattern: False for pattern in ready}
        symptoms = {}
        for log_file in self.logs[0]:
            if not log_file["since_start"]:
                continue
            lines = log_file["lines"]
            last = {p: max((i for i, line in enumerate(lines) if p in line), default=-1) for p in ready}
            all_ready_after = min(last.values(), default=-1)
            for pattern in ready:
                ready_seen[pattern] |= last[pattern] >= 0
            for symptom in LOG_SYMPTOMS:
                hits = [i for i, line in enumerate(lines) if symptom["pattern"] in line and i > all_ready_after]
                if hits:
                    hit = symptoms.setdefault(symptom["id"], {"symptom": symptom, "count": 0, "line": ""})
                    hit["count"] += len(hits)
                    hit["line"] = self.masked(lines[hits[-1]])
        return {"ready": ready_seen, "symptoms": [symptoms[s["id"]] for s in LOG_SYMPTOMS if s["id"] in symptoms]}

    @functools.cached_property
    def restart_pending(self):
        """True when the .env changed after the backend started (the running backend has the old one)."""
        if self.started is None or self.env_mtime is None:
            return False
        return self.env_mtime > self.started

    @functools.cached_property
    def memory(self):
        info = __utils__["serverfix_files.meminfo"]()  # pylint: disable=undefined-variable
        total = info.get("MemTotal", 0)
        available = info.get("MemAvailable", 0)
        processes = {}
        for proc in self.pm2[0] or []:
            processes[proc["name"]] = {
                "status": proc.get("status"),
                "memory_mb": _mb(proc.get("memory") or 0),
                "percent": round(100 * (proc.get("memory") or 0) / total, 1) if total else None,
            }
        return {
            "total_mb": _mb(total),
            "available_mb": _mb(available),
            "used_percent": round(100 * (total - available) / total, 1) if total else None,
            "available_percent": round(100 * available / total, 1) if total else None,
            "processes": processes,
        }

    @functools.cached_property
    def swaps(self):
        """``(active swap areas, error)`` from ``proc_swaps`` (a file deleted while in use is not swap we own)."""
        swaps, error = _call("swapfile.active_swaps", proc_swaps=self.proc_swaps)
        return [s for s in swaps or [] if not s["deleted"]], error

    @functools.cached_property
    def swapfile(self):
        """``(swapfile.status of the configured file, error)``."""
        return _call("swapfile.status", self.cfg["swap"]["file"])

    @functools.cached_property
    def sysctl(self):
        swap = self.cfg["swap"]
        runtime, _ = _call("sysctl_persist.runtime", list(SYSCTL_KEYS))
        current = {key: int(value) if value and value.lstrip("-").isdigit() else None
                   for key, value in (runtime or {}).items()}
        return {key: {"current": current.get(key), "wanted": int(swap[name])} for key, name in SYSCTL_KEYS.items()}

    def env_differences(self):
        """``(missing keys, {key: {found, wanted}})`` of the wanted keys; secrets masked."""
        env = self.env[0] or {}
        missing, different = [], {}
        for key, want in self.wanted.items():
            if key not in env:
                missing.append(key)
            elif env[key] != want:
                if key in self.secret_keys:
                    different[key] = {"found": SECRET, "wanted": SECRET if want else "(empty)"}
                else:
                    different[key] = {"found": env[key], "wanted": want}
        return missing, different

    def shadowed(self):
        """Managed .env keys pm2 passes from its saved start-time environment (they win over the .env)."""
        if self.backend is None:
            return []
        return sorted(set(self.backend.get("env_keys") or []) & set(self.wanted))

    def settings_summary(self):
        return {"env_file": self.cfg["dotenv"]["file"], "backend": self.backend_name,
                "pm2_home": self.cfg["pm2"]["home"], "redis_port": self.redis_target["port"],
                "swap_file": self.cfg["swap"]["file"], "source": self.source}


def _scrub(data, secrets):
    """Replace every known secret value anywhere in ``data`` (a last line of defence)."""
    if not secrets:
        return data
    if isinstance(data, dict):
        return {key: _scrub(value, secrets) for key, value in data.items()}
    if isinstance(data, list):
        return [_scrub(value, secrets) for value in data]
    if isinstance(data, str):
        for secret in sorted(secrets, key=len, reverse=True):
            data = data.replace(secret, SECRET)
    return data


def _redis_evidence(facts):
    target = facts.redis_target
    listening = facts.listening[0] or []
    return {
        "host": target["host"], "port": target["port"], "from": target["source"],
        "password_set": bool(target["password"]),
        "package_installed": facts.package_installed,
        "service": facts.cfg["redis"]["service"], "service_running": facts.service_running[0],
        "listening": listening, "ping": "PONG" if facts.ping["ok"] else facts.ping["error"],
    }


def _diagnose_redis(facts):
    """Redis down / unreachable on REDIS_HOST / auth / bind / eviction policy findings."""
    findings = []
    target = facts.redis_target
    listening, listen_error = facts.listening
    evidence = _redis_evidence(facts)
    where = f"{target['host']}:{target['port']}"
    if listen_error and not facts.ping["ok"]:
        evidence["error"] = listen_error
        return [_finding("redis-unchecked", "warning", f"Redis cannot be checked: {listen_error}", evidence,
                         _fix("serverfix.redis", "serverfix:redis"))]
    if not listening and not facts.ping["ok"]:
        state = "not installed" if facts.package_installed is False else "not running"
        findings.append(_finding(
            "redis-not-running", "critical",
            f"Redis is {state}: nothing listens on port {target['port']} (the queue runs in the slow "
            "synchronous fallback)", evidence,
            _fix("serverfix.redis", "serverfix:redis", "install, configure and start Redis (runbook Phase 1)")))
        return findings
    first = facts.resolved[0] if facts.resolved else None
    if listening and (first is None or not _covered(first, listening)):
        evidence["resolves_to"] = facts.resolved
        findings.append(_finding(
            "redis-host-mismatch", "critical",
            f"REDIS_HOST {target['host']!r} resolves to {', '.join(facts.resolved) or 'nothing'} but Redis "
            f"listens on {', '.join(listening)} (the IPv4/IPv6 localhost pitfall)", evidence,
            _fix("serverfix.env", "serverfix:redis:host",
                 "use REDIS_HOST=127.0.0.1 (or add the address to serverfix:redis:bind)")))
    elif not facts.ping["ok"]:
        error = facts.ping["error"] or ""
        auth = any(word in error for word in ("NOAUTH", "WRONGPASS", "invalid password", "AUTH"))
        findings.append(_finding(
            "redis-auth-failed" if auth else "redis-not-answering", "critical",
            f"Redis at {where} does not answer PING with PONG: {error}", evidence,
            _fix("serverfix.env" if auth else "serverfix.redis", "serverfix:redis:password" if auth else "serverfix:redis",
                 "REDIS_PASSWORD in the .env must match Redis' requirepass" if auth else
                 "check `journalctl -u redis-server -n 50`")))
    public = [a for a in listening if not _is_loopback(a)]
    if public:
        findings.append(_finding(
            "redis-not-loopback-only", "warning",
            f"Redis listens on {', '.join(public)}, not only on loopback", {"listening": listening, "port": target["port"]},
            _fix("serverfix.redis", "serverfix:redis:bind", "bind 127.0.0.1 -::1")))
    policy, error = facts.eviction_policy
    wanted = facts.cfg["redis"]["maxmemory_policy"]
    if policy is not None and policy != wanted:
        findings.append(_finding(
            "redis-eviction-policy", "warning",
            f"Redis maxmemory-policy is {policy}, not {wanted} (queue jobs and their locks may be evicted)",
            {"maxmemory_policy": policy, "wanted": wanted},
            _fix("serverfix.redis", "serverfix:redis:maxmemory_policy")))
    elif policy is None and facts.ping["ok"]:
        findings.append(_finding("redis-eviction-policy-unknown", "info",
                                 f"maxmemory-policy could not be read: {error}", {"error": error},
                                 _fix(None, "serverfix:redis:maxmemory_policy")))
    return findings


def _diagnose_env(facts):
    env, error = facts.env
    path = facts.cfg["dotenv"]["file"]
    if env is None:
        return [_finding("env-unreadable", "critical", f"The backend's .env cannot be read: {error}",
                         {"file": path, "error": error},
                         _fix("serverfix.env", "serverfix:dotenv:file", "point serverfix:dotenv:file at the "
                              "backend's .env (or set serverfix:dotenv:create: true)"))]
    missing, different = facts.env_differences()
    if not missing and not different:
        return []
    wanted_queue = facts.wanted[QUEUE_KEY]
    queue_wrong = env.get(QUEUE_KEY) != wanted_queue and wanted_queue == "true"
    if queue_wrong:
        found = "missing" if QUEUE_KEY not in env else f"{env[QUEUE_KEY]!r}"
        title = f"Queue not configured: {QUEUE_KEY} is {found} in {path} (the backend uses the synchronous fallback)"
    else:
        title = f"{path} differs from the pillar in {len(missing) + len(different)} key(s)"
    return [_finding("env-queue-config", "critical" if queue_wrong else "warning", title,
                     {"file": path, "missing": missing, "different": different, "keys_in_file": len(env)},
                     _fix("serverfix.env", "serverfix:queue", "write the REDIS_* and QUEUE_* keys "
                          "(runbook Phase 2; a backup is made first)"))]


def _diagnose_pm2(facts):
    findings = []
    procs, error = facts.pm2
    backend = facts.backend_name
    pm2_fix = _fix(None, "serverfix:pm2:bin", "set serverfix:pm2:bin/user/home to the pm2 that runs the backend")
    if procs is None:
        return [_finding("pm2-unavailable", "warning", f"pm2's process list cannot be read: {error}",
                         {"pm2_home": facts.cfg["pm2"]["home"], "error": error}, pm2_fix)]
    memory = facts.memory
    if facts.backend is None:
        findings.append(_finding("backend-missing", "critical", f"{backend} is not in pm2's list",
                                 {"processes": sorted(p["name"] for p in procs)},
                                 _fix(None, "serverfix:backend:name", "start the backend under pm2 or fix the name")))
    elif facts.backend.get("status") != "online":
        findings.append(_finding("backend-not-online", "critical",
                                 f"{backend} is {facts.backend.get('status')}, not online",
                                 {"status": facts.backend.get("status"),
                                  "restarts": facts.backend.get("restart_time")},
                                 _fix("serverfix.backend", "serverfix:backend:restart")))
    saved, saved_error = facts.saved
    unwanted = facts.cfg["remove_processes"]
    running = {p["name"]: _mb(p.get("memory") or 0) for p in procs if p["name"] in unwanted}
    in_dump = sorted(set(saved or []) & set(unwanted))
    if running or in_dump:
        names = ", ".join(sorted(set(running) | set(in_dump)))
        parts = [f"{name} runs in production ({mb} MB)" for name, mb in sorted(running.items())]
        parts += [f"{name} is in pm2's saved dump (returns after a reboot)" for name in in_dump if name not in running]
        title = "High RAM use: " + "; ".join(parts)
        back = memory["processes"].get(backend)
        if back:
            title += f"; {backend} uses {back['memory_mb']} MB ({back['percent']} % of RAM)"
        evidence = {"running_mb": running, "in_saved_dump": in_dump, "ram_total_mb": memory["total_mb"],
                    "ram_used_percent": memory["used_percent"]}
        if back:
            evidence.update(backend_mb=back["memory_mb"], backend_percent=back["percent"])
        if saved_error:
            evidence["dump_error"] = saved_error
        findings.append(_finding("pm2-unwanted-processes", "warning", title, evidence,
                                 _fix("serverfix.prisma_studio", "serverfix:remove_processes",
                                      f"pm2 delete {names} and pm2 save (runbook Phase 3)")))
    shadowed = facts.shadowed()
    if shadowed:
        findings.append(_finding(
            "env-shadowed-by-pm2", "warning",
            f"pm2 passes {', '.join(shadowed)} from {backend}'s saved start environment: edits in the .env "
            "have no effect until it is deleted and started again", {"keys": shadowed},
            _fix("serverfix.backend", "serverfix:backend:shadowed_env",
                 f"pm2 delete {backend} and start it again from its ecosystem file (restart keeps the old env)")))
    return findings


def _diagnose_logs(facts, findings):
    """Attach log symptoms to the finding that causes them; the rest means the backend needs a restart."""
    by_id = {f["id"]: f for f in findings}
    stale = []
    for hit in facts.log_state["symptoms"]:
        symptom = hit["symptom"]
        cause = next((by_id[c] for c in symptom["causes"] if c in by_id), None)
        record = {"symptom": symptom["pattern"], "count": hit["count"], "last_line": hit["line"],
                  "fix": symptom["fix"]}
        if cause is not None:
            cause["evidence"].setdefault("backend_log", []).append(record)
        else:
            stale.append(record)
    backend = facts.backend_name
    if stale or facts.restart_pending:
        evidence = {"log_symptoms": stale}
        if facts.restart_pending:
            evidence["env_changed_after_start"] = True
            evidence["backend_started"] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(facts.started))
            evidence["env_changed"] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(facts.env_mtime))
        reason = (f"its log shows {', '.join(repr(s['symptom']) for s in stale)} whose cause is fixed"
                  if stale else "the .env changed after it started")
        findings.append(_finding(
            "backend-restart-pending", "warning",
            f"{backend} still runs with the old settings: {reason}", evidence,
            _fix("serverfix.backend", "serverfix:backend:restart",
                 f"restart {backend} after consultation (runbook Phase 5): pillar serverfix:backend:restart: true")))
    log_error = facts.logs[1]
    if log_error and facts.backend is not None:
        findings.append(_finding("backend-log-unreadable", "info", f"{backend}'s log cannot be read: {log_error}",
                                 {"error": log_error}, _fix(None, "serverfix:pm2:home")))


def _diagnose_system(facts):
    findings = []
    memory = facts.memory
    swap = facts.cfg["swap"]
    swaps, swaps_error = facts.swaps
    total_swap = sum(s["size_bytes"] for s in swaps)
    swapfile, _ = facts.swapfile
    if swaps_error:
        findings.append(_finding("swap-unknown", "info", f"Active swap cannot be read: {swaps_error}",
                                 {"error": swaps_error}, _fix("serverfix.swap", "serverfix:swap")))
    elif not swaps:
        findings.append(_finding(
            "swap-missing", "warning",
            f"No swap: 0 B swap for {memory['total_mb']} MB RAM, {memory['used_percent']} % used "
            "(no room for load peaks)",
            {"swap_total_mb": 0, "ram_total_mb": memory["total_mb"], "ram_used_percent": memory["used_percent"],
             "wanted_file": swap["file"], "wanted_size": str(swap["size"])},
            _fix("serverfix.swap", "serverfix:swap", f"create {swap['size']} {swap['file']} (runbook Phase 4)")))
    elif swap["enabled"] and not (swapfile or {}).get("active"):
        findings.append(_finding(
            "swap-file-inactive", "info",
            f"{swap['file']} is not active; other swap: {_mb(total_swap)} MB",
            {"active_swaps": [s["filename"] for s in swaps], "swap_total_mb": _mb(total_swap)},
            _fix("serverfix.swap", "serverfix:swap:file")))
    if memory["available_percent"] is not None and memory["available_percent"] < MEMORY_LOW_PERCENT:
        findings.append(_finding(
            "memory-low", "warning",
            f"Only {memory['available_mb']} MB ({memory['available_percent']} %) of RAM available", memory,
            _fix("serverfix.prisma_studio", "serverfix:remove_processes", "stop what production does not need")))
    procs = ", ".join(f"{name} {p['memory_mb']} MB ({p['percent']} %)" for name, p in memory["processes"].items())
    findings.append(_finding(
        "memory", "info",
        f"RAM {memory['total_mb']} MB, {memory['available_mb']} MB available ({memory['used_percent']} % used); "
        f"swap {_mb(total_swap)} MB" + (f"; pm2: {procs}" if procs else ""),
        dict(memory, swap_total_mb=_mb(total_swap)), _fix()))
    differ = {k: v for k, v in facts.sysctl.items() if v["current"] != v["wanted"]}
    if swap["enabled"] and differ:
        findings.append(_finding(
            "sysctl-values", "info",
            "; ".join(f"{k}={v['current']} (wanted {v['wanted']})" for k, v in differ.items()),
            facts.sysctl, _fix("serverfix.swap", "serverfix:swap:swappiness", "runbook step 4.2")))
    return findings


def _report(function, items, key, order, facts, start):
    counts = {name: sum(1 for item in items if item[key] == name) for name in order}
    bad = ("critical", "warning") if function == "diagnose" else ("fail",)
    result = {
        "function": function,
        "version": REPORT_VERSION,
        "ok": not any(counts[name] for name in bad),
        "duration_ms": int((time.perf_counter() - start) * 1000),
        "counts": counts,
        "settings": facts.settings_summary(),
        "findings" if function == "diagnose" else "checks": items,
    }
    return _scrub(result, facts.secrets())


def diagnose(config=None, proc_swaps="/proc/swaps"):
    """
    Find what the runbook's analysis ("Gefundene Probleme") found, on this host, read-only.

    Each finding has an ``id``, a ``severity`` (critical / warning / info), ``evidence`` with
    numbers and the ``fix`` (the SLS and the pillar key that change it). On the runbook's
    "before" server it reports exactly its four problems: ``redis-not-running`` (critical),
    ``env-queue-config`` (critical: QUEUE_ENABLED missing), ``swap-missing`` (warning) and
    ``pm2-unwanted-processes`` (warning: high RAM, prisma-studio in production), plus info items
    (``memory``, ``sysctl-values``). Other findings: ``redis-host-mismatch`` (REDIS_HOST resolves to
    an address Redis does not listen on), ``redis-auth-failed``, ``redis-not-loopback-only``,
    ``redis-eviction-policy``, ``env-unreadable``, ``env-shadowed-by-pm2``, ``backend-missing``,
    ``backend-not-online``, ``backend-restart-pending`` (the .env changed after the backend started,
    or its log shows a troubleshooting symptom whose cause is already fixed), ``memory-low``,
    ``pm2-unavailable``, ``pillar-invalid``. Troubleshooting symptoms in the backend's log
    (``connect ECONNREFUSED``, ``Queue-System ist deaktiviert``, ``Redis nicht verfügbar - Workers
    werden nicht gestartet``) are attached to the finding that causes them (``backend_log``).

    The default outputter ``serverfix_report`` prints a table; ``--out=json`` gives this shape
    (stable: keys may be added, none renamed or removed; secret values never appear)::

        {"function": "diagnose", "version": 1,
         "ok": true when there is no critical and no warning finding,
         "duration_ms": int,
         "counts": {"critical": int, "warning": int, "info": int},
         "settings": {"env_file": str, "backend": str, "pm2_home": str, "redis_port": int, "swap_file": str,
                      "source": "config" | "pillar" | "defaults only: ..." (where the settings came from)},
         "findings": [                        # critical first, then warning, then info
             {"id": str, "severity": "critical" | "warning" | "info",
              "title": str,                   # one line for a person
              "evidence": {name: number | string | bool | list | mapping},
              "fix": {"state": "serverfix.<sls>" | null, "pillar": "serverfix:<key>" | null, "hint": str}}]}

    config
        The merged settings (as map.jinja renders them, a mapping or JSON); by default
        the formula's defaults (``_utils/serverfix_defaults.py``, generated from defaults.yaml) merged with the ``serverfix`` pillar.
    proc_swaps
        Where to read the active swap areas; tests point it at a copy, since swap is kernel-global.

    CLI Example:

    .. code-block:: bash

        salt '*' serverfix.diagnose
        salt '*' serverfix.diagnose --out=json
    """
    start = time.perf_counter()
    cfg, pillar_errors, source = _settings(config)
    facts = _Facts(cfg, proc_swaps=proc_swaps, source=source)
    findings = []
    if pillar_errors:
        findings.append(_finding("pillar-invalid", "critical", "The serverfix pillar is not valid",
                                 {"errors": pillar_errors}, _fix(None, PILLAR_KEY, "see pillar.example")))
    if cfg["redis"]["enabled"]:
        findings += _diagnose_redis(facts)
    findings += _diagnose_env(facts)
    findings += _diagnose_pm2(facts)
    _diagnose_logs(facts, findings)
    findings += _diagnose_system(facts)
    findings.sort(key=lambda f: SEVERITY_ORDER.index(f["severity"]))  # stable: rule order within a severity
    return _report("diagnose", findings, "severity", SEVERITY_ORDER, facts, start)


def _verify_redis(facts):
    cfg = facts.cfg["redis"]
    if not cfg["enabled"]:
        return [_check(cid, "skip", "serverfix:redis:enabled is false", {})
                for cid in ("redis-service", "redis-ping", "redis-loopback-only", "redis-eviction-policy")]
    target, service = facts.redis_target, cfg["service"]
    (running, error_running), (enabled, error_enabled) = facts.service_running, facts.service_enabled
    fix = _fix("serverfix.redis", "serverfix:redis")
    checks = [_check(
        "redis-service", "pass" if running and enabled else "fail",
        f"service {service}: {'running' if running else 'not running'}, "
        f"{'enabled' if enabled else 'not enabled'} at boot",
        {"service": service, "running": running, "enabled": enabled,
         "package_installed": facts.package_installed, "error": error_running or error_enabled}, fix)]
    ping = facts.ping
    where = f"{target['host']}:{target['port']}"
    auth = " with AUTH" if target["password"] else ""
    checks.append(_check(
        "redis-ping", "pass" if ping["ok"] else "fail",
        f"PING {where}{auth} (from the {target['source']}) -> " + ("PONG" if ping["ok"] else str(ping["error"])),
        {"host": target["host"], "port": target["port"], "from": target["source"],
         "auth": bool(target["password"]), "reply": ping["reply"], "error": ping["error"], "ms": ping["ms"]}, fix))
    listening, error = facts.listening
    public = [a for a in listening or [] if not _is_loopback(a)]
    uncovered = [a for a in facts.resolved if not _covered(a, listening or [])]
    ok = bool(listening) and not public and not (facts.resolved and facts.resolved[0] in uncovered)
    checks.append(_check(
        "redis-loopback-only", "pass" if ok else "fail",
        f"port {target['port']} listens on {', '.join(listening or []) or 'nothing'}"
        + (f"; {target['host']} -> {', '.join(facts.resolved)}" if facts.resolved else ""),
        {"listening": listening, "not_loopback": public, "resolves_to": facts.resolved,
         "not_listened": uncovered, "error": error}, _fix("serverfix.redis", "serverfix:redis:bind")))
    policy, error = facts.eviction_policy
    wanted = cfg["maxmemory_policy"]
    checks.append(_check(
        "redis-eviction-policy", "pass" if policy == wanted else "fail",
        f"maxmemory-policy {policy or '?'} (wanted {wanted})",
        {"maxmemory_policy": policy, "wanted": wanted, "error": error},
        _fix("serverfix.redis", "serverfix:redis:maxmemory_policy")))
    return checks


def _verify_env(facts):
    env, error = facts.env
    fix = _fix("serverfix.env", "serverfix:queue")
    if env is None:
        env_check = _check("env-keys", "fail", f".env not readable: {error}", {"error": error}, fix)
    else:
        missing, different = facts.env_differences()
        ok = not missing and not different
        shown = {key: (SECRET if key in facts.secret_keys and value else value)
                 for key, value in facts.wanted.items()}
        env_check = _check(
            "env-keys", "pass" if ok else "fail",
            f"{len(facts.wanted) - len(missing) - len(different)}/{len(facts.wanted)} keys as the pillar says"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; different {', '.join(different)}" if different else ""),
            {"file": facts.cfg["dotenv"]["file"], "wanted": shown, "missing": missing, "different": different}, fix)
    shadowed = facts.shadowed()
    mode = facts.cfg["backend"]["shadowed_env"]
    shadow_check = _check(
        "env-not-shadowed", ("fail" if mode == "fail" else "warn") if shadowed else "pass",
        (f"pm2's saved env of {facts.backend_name} overrides {', '.join(shadowed)}" if shadowed
         else f"no managed key is overridden by pm2's saved env of {facts.backend_name}"),
        {"keys": shadowed, "shadowed_env": mode},
        _fix("serverfix.backend", "serverfix:backend:shadowed_env") if shadowed else None)
    return [env_check, shadow_check]


def _verify_swap(facts):
    swap = facts.cfg["swap"]
    if not swap["enabled"]:
        return [_check("swap", "skip", "serverfix:swap:enabled is false", {}),
                _check("sysctl", "skip", "serverfix:swap:enabled is false", {})]
    status, error = facts.swapfile
    status = status or {}
    wanted = __utils__["serverfix_size.parse_size"](swap["size"])  # pylint: disable=undefined-variable
    size = int(status.get("size_bytes") or 0)  # the file's size; /proc/swaps shows one page less
    active = bool(status.get("active"))
    ok = active and size >= wanted
    swap_check = _check(
        "swap", "pass" if ok else "fail",
        f"{swap['file']}: {'active' if active else 'not active'}, {_mb(size)} MB (wanted {_mb(wanted)} MB)"
        + (f" ({error})" if error else ""),
        {"file": swap["file"], "active": active, "size_mb": _mb(size), "wanted_mb": _mb(wanted),
         "active_size_mb": _mb(status.get("active_size_bytes") or 0), "error": error},
        _fix("serverfix.swap", "serverfix:swap"))
    differ = [k for k, v in facts.sysctl.items() if v["current"] != v["wanted"]]
    sysctl_check = _check(
        "sysctl", "fail" if differ else "pass",
        ", ".join(f"{k}={v['current']}" + (f" (wanted {v['wanted']})" if k in differ else "")
                  for k, v in facts.sysctl.items()),
        facts.sysctl, _fix("serverfix.swap", "serverfix:swap:swappiness"))
    return [swap_check, sysctl_check]


def _verify_pm2(facts):
    procs, error = facts.pm2
    backend = facts.backend_name
    if procs is None:
        return [_check(cid, "fail", f"pm2's list cannot be read: {error}", {"error": error},
                       _fix(None, "serverfix:pm2:bin")) for cid in ("pm2-online", "pm2-removed", "backend-ready")]
    offline = {p["name"]: p.get("status") for p in procs if p.get("status") != "online"}
    checks = [_check(
        "pm2-online", "fail" if offline or facts.backend is None else "pass",
        (f"not online: {', '.join(f'{n} ({s})' for n, s in offline.items())}" if offline else
         f"{len(procs)} app(s) online") + ("" if facts.backend else f"; {backend} is not in the list"),
        {"apps": {p["name"]: p.get("status") for p in procs}, "restarts": {p["name"]: p.get("restart_time")
                                                                         for p in procs}},
        _fix("serverfix.backend", "serverfix:backend"))]
    saved, saved_error = facts.saved
    unwanted = facts.cfg["remove_processes"]
    running = sorted({p["name"] for p in procs} & set(unwanted))
    in_dump = sorted(set(saved or []) & set(unwanted))
    ok = not running and not in_dump and saved_error is None
    checks.append(_check(
        "pm2-removed", "pass" if ok else "fail",
        (f"{', '.join(unwanted)} absent from pm2's list and saved dump" if ok else
         f"still in the list: {', '.join(running) or '-'}; in the saved dump: {', '.join(in_dump) or '-'}"
         + (f"; dump unreadable: {saved_error}" if saved_error else "")),
        {"remove": unwanted, "in_list": running, "in_saved_dump": in_dump, "error": saved_error},
        _fix("serverfix.prisma_studio", "serverfix:remove_processes")))
    checks.append(_verify_backend_ready(facts))
    return checks


def _verify_backend_ready(facts):
    backend = facts.backend_name
    patterns = facts.cfg["backend"]["ready_patterns"]
    error = facts.logs[1]
    found = facts.log_state["ready"]
    symptoms = [s["symptom"]["pattern"] for s in facts.log_state["symptoms"]]
    ok = facts.backend is not None and all(found.values()) and not symptoms and not facts.restart_pending
    status = "pass"
    if not ok:
        # without a restart (the default) the backend keeps its old settings: say so, don't fail the run
        status = "fail" if facts.cfg["backend"]["restart"] or facts.backend is None else "warn"
    missing = [p for p, hit in found.items() if not hit]
    if ok:
        title = f"{backend} logged {len(patterns)} ready line(s) since its start"
    elif facts.restart_pending:
        title = f"{backend} started before the .env changed: it still runs with the old settings"
    elif symptoms:
        title = f"{backend}'s log shows {', '.join(repr(s) for s in symptoms)} not followed by the ready lines"
    else:
        title = (f"{backend} has not logged {', '.join(repr(p) for p in missing)} since its start"
                 + (f" ({error})" if error else ""))
    return _check("backend-ready", status, title,
                  {"ready_lines": found, "symptoms": symptoms, "restart_pending": facts.restart_pending,
                   "restart_allowed": facts.cfg["backend"]["restart"], "error": error},
                  _fix("serverfix.backend", "serverfix:backend:restart",
                       f"restart {backend} after consultation (runbook Phase 5)"))


def _probe(url, count, limit_ms):
    """Time up to ``count`` GETs of ``url`` within PROBE_BUDGET seconds (stops early once the median
    is decided or the next request would overrun); proxies are bypassed: the URL is local."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    times, errors = [], []
    begin = time.perf_counter()
    for _ in range(count):
        spent = time.perf_counter() - begin
        if spent + max(times, default=0) / 1000 > PROBE_BUDGET or sum(t > limit_ms for t in times) > count // 2:
            break
        start = time.perf_counter()
        try:
            with opener.open(url, timeout=max(0.05, min(5 * limit_ms / 1000, PROBE_BUDGET - spent))) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            errors.append(f"HTTP {exc.code}")
        except (OSError, ValueError) as exc:
            errors.append(str(getattr(exc, "reason", exc)))
            break
        times.append(round((time.perf_counter() - start) * 1000, 1))
    return times, errors


def _verify_probe(facts):
    verify = facts.cfg["verify"]
    url = verify["url"]
    if not url:
        return _check("http-probe", "skip", "no serverfix:verify:url set", {})
    count, limit = int(verify["requests"]), int(verify["limit_ms"])
    times, errors = _probe(url, count, limit)
    median = round(statistics.median(times), 1) if times else None
    ok = bool(times) and not errors and median <= limit
    return _check(
        "http-probe", "pass" if ok else "fail",
        f"{len(times)}/{count} GET {url}: median {median} ms (limit {limit} ms)"
        + (f"; errors: {', '.join(sorted(set(errors)))}" if errors else ""),
        {"url": url, "requests": len(times), "wanted_requests": count, "median_ms": median,
         "max_ms": max(times) if times else None, "limit_ms": limit, "times_ms": times, "errors": errors},
        _fix("serverfix.backend", "serverfix:verify:url", "runbook: < 100 ms instead of 2-6 s"))


def verify(config=None, proc_swaps="/proc/swaps", set_retcode=True):
    """
    Run the runbook's checks after the fix ("Verifizierung nach Fix" 1-4), read-only, in
    well under 2 s: pass / fail (/ warn / skip / info) per check, in this order:

    ``redis-service`` (active and enabled), ``redis-ping`` (PING -> PONG over the exact
    REDIS_HOST/REDIS_PORT/REDIS_PASSWORD of the .env, AUTH inside the socket), ``redis-loopback-only``
    (and REDIS_HOST resolving to a listened address), ``redis-eviction-policy``, ``env-keys`` (the
    .env keys as the pillar says), ``env-not-shadowed`` (pm2's saved env does not override them),
    ``swap`` (active, with its size), ``sysctl``, ``pm2-online`` (every app), ``pm2-removed`` (absent
    from the list and the saved dump), ``backend-ready`` (the ready lines logged and no symptom after
    them; ``warn`` instead of ``fail`` while serverfix:backend:restart is false and the backend still
    runs with the old .env), ``memory`` (summary), ``http-probe`` (optional: serverfix:verify:url timed
    serverfix:verify:requests times, median against serverfix:verify:limit_ms).

    The salt return code is 1 when a check fails. The default outputter ``serverfix_report``
    prints a table; ``--out=json`` gives this shape (stable: keys may be added, none renamed or
    removed; secret values never appear)::

        {"function": "verify", "version": 1,
         "ok": true when no check has status "fail",
         "duration_ms": int,
         "counts": {"fail": int, "warn": int, "pass": int, "skip": int, "info": int},
         "settings": {...as diagnose},
         "checks": [                          # always all of them, in the order above
             {"id": str, "status": "pass" | "fail" | "warn" | "skip" | "info",
              "title": str, "evidence": {...}, "fix": {"state": ..., "pillar": ..., "hint": str}}]}

    config
        The merged settings (map.jinja); by default defaults.yaml merged with the pillar.
    proc_swaps
        Where to read the active swap areas (tests point it at a copy: swap is kernel-global).
    set_retcode
        Set the return code to 1 on a failed check (the ``serverfix.verified`` state passes False).

    CLI Example:

    .. code-block:: bash

        salt '*' serverfix.verify
        salt '*' serverfix.verify --out=json
    """
    start = time.perf_counter()
    cfg, _, source = _settings(config)
    facts = _Facts(cfg, proc_swaps=proc_swaps, source=source)
    checks = _verify_redis(facts) + _verify_env(facts) + _verify_swap(facts) + _verify_pm2(facts)
    memory = facts.memory
    checks.append(_check(
        "memory", "info",
        f"RAM {memory['total_mb']} MB, {memory['available_mb']} MB available ({memory['used_percent']} % used)",
        memory))
    checks.append(_verify_probe(facts))
    checks.sort(key=lambda c: VERIFY_CHECKS.index(c["id"]))
    result = _report("verify", checks, "status", ("fail", "warn", "pass", "skip", "info"), facts, start)
    if set_retcode and not result["ok"]:
        __context__["retcode"] = 1  # pylint: disable=undefined-variable
    return result
