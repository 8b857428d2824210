"""
The ``serverfix`` pillar's contract: one rule per key (``schema``) and :func:`validate`,
which names every problem with its key, the bad value (``<secret>`` for secrets) and the
expected form. Used by ``serverfix.validate_pillar``, the preflight and diagnose.
Reached as ``__utils__["serverfix_schema.validate"]``; stdlib and salt only.
"""

import difflib
import ipaddress
import os
import re

PILLAR_KEY = "serverfix"
SECRET = "<secret>"

# npm dotenv only reads keys made of these characters (anything else is silently ignored).
ENV_KEY_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
REDIS_MEMORY_RE = re.compile(r"^[0-9]+(?:[kmg]b?)?$", re.IGNORECASE)
# ASCII decimal only, no sign, no leading zero: int("010") is 10 here but 8 to the kernel's
# base-0 reader, and str.isdigit() also takes "³" (int() fails) and "٣" (int() gives 3)
INT_STR_RE = re.compile(r"(?:0|[1-9][0-9]*)", re.ASCII)
# npm dotenv assigns parsed keys to a plain object: `__proto__` sets its prototype, not a key
ENV_KEYS_IGNORED = ("__proto__",)
REDIS_WILDCARDS = ("*", "::*")
# how serverfix:rollout:target may be matched (salt's tgt_type values that need no extra options)
ROLLOUT_TGT_TYPES = (
    "glob",
    "pcre",
    "list",
    "grain",
    "grain_pcre",
    "pillar",
    "pillar_pcre",
    "nodegroup",
    "compound",
    "ipcidr",
)
PM2_NAME_RE = re.compile(r"^[A-Za-z0-9_.@:+-][A-Za-z0-9_.@:+ -]*$")


class _Rule:
    """One pillar value's expected form: a checker plus the words that describe it."""

    def __init__(self, expected, check, secret=False):
        self.expected = expected
        self.check = check
        self.secret = secret


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def as_int(value):
    """``value`` as an ``int`` when it is one (not a bool) or a string of ASCII decimal digits
    without a leading zero (``"10"``); otherwise ``value`` unchanged (the schema refuses it)."""
    if isinstance(value, str) and INT_STR_RE.fullmatch(value):
        return int(value)
    return value


def _int_rule(low, high, example):
    def check(value):
        value = as_int(value)
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
ABS_PATH = _str_rule(
    "an absolute path on one line (e.g. /var/www/intranet/backend/.env)",
    pattern=r"^/",
    allow_empty=False,
)
OPT_ABS_PATH = _str_rule("an absolute path on one line, or '' to find it on PATH", pattern=r"^/")
NAME = _str_rule(
    "a name on one line without spaces (e.g. root)", pattern=r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*$"
)
MODE = _str_rule(
    "an octal file mode as a string (e.g. '0640')", pattern=r"^0?[0-7]{3}$", allow_empty=False
)
ENV_KEY = _Rule(
    "a .env key of letters, digits, '_', '.', '-' only, not __proto__ (npm dotenv ignores others)",
    lambda v: isinstance(v, str) and bool(ENV_KEY_RE.match(v)) and v not in ENV_KEYS_IGNORED,
)
PM2_NAME = _Rule(
    "a pm2 process name that is not 'all', not a number and has no newline",
    lambda v: _single_line(v) and bool(PM2_NAME_RE.match(v)) and v != "all" and not v.isdigit(),
)
HOSTNAME = _str_rule(
    "a host name or IP address on one line (e.g. 127.0.0.1)",
    pattern=r"^[A-Za-z0-9_.:-]+$",
    allow_empty=False,
)


def bind_address(value):
    """The address of a Redis ``bind`` entry without its ``-`` (optional) or ``!`` prefix, as an
    ``ipaddress`` object, or the wildcard string (``*``, ``::*``); ``None`` when it is neither."""
    if not isinstance(value, str) or not value.isascii():
        return None
    address = value[1:] if value[:1] in ("-", "!") else value
    if address in REDIS_WILDCARDS:
        return address
    try:
        return ipaddress.ip_address(address)
    except ValueError:
        return None


def is_loopback_bind(value):
    """True for a ``bind`` entry in 127.0.0.0/8 or ``::1`` (wildcards and the rest: False)."""
    address = bind_address(value)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return not isinstance(address, (str, type(None))) and address.is_loopback


BIND_ADDR = _Rule(
    "an IP address (checked with ipaddress) or '*', optionally prefixed with '-' (optional) "
    "or '!' (e.g. 127.0.0.1, -::1)",
    lambda v: bind_address(v) is not None,
)


def _size_rule(parse_size):
    def check(value):
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            return False
        if isinstance(value, str) and not value.isascii():
            return False
        try:
            return parse_size(value) > 0
        except ValueError:
            return False

    return _Rule("a size such as 2G, 512M or 1048576K (an integer with K, M, G or T)", check)


def _env_value_check(value):
    if isinstance(value, bool) or value is None:
        return False
    return isinstance(value, (str, int, float))


ENV_VALUE = _Rule(
    "a string or number (lists, mappings and null cannot be written to a .env)", _env_value_check
)


def _extra_rule(managed):
    # the keys the formula writes itself (defaults.yaml's managed_env): an `extra` key among them
    # would fight the pillar's own setting
    def check(value):
        return isinstance(value, dict) and all(
            ENV_KEY.check(k) and ENV_VALUE.check(v) and k not in managed for k, v in value.items()
        )

    return _Rule(
        "a mapping of .env keys (letters, digits, '_', '.', '-'; not one the formula sets "
        "from serverfix:redis/queue, e.g. REDIS_HOST) to strings or numbers",
        check,
    )


def pillar_schema(parse_size, managed):
    """
    ``{section: {key: rule}}`` (or ``{section: rule}``) for every pillar key. ``parse_size`` is
    ``serverfix_size.parse_size``, ``managed`` the managed .env keys (``serverfix_defaults``):
    utils get no ``__utils__`` of their own, so the caller passes them.
    """
    return {
        "backups": {
            "keep": _int_rule(1, 1000, 5),
            "dir": _str_rule(
                "an absolute path on one line (e.g. /var/backups/serverfix), or '' for next to "
                "each file",
                pattern=r"^/",
            ),
        },
        "dotenv": {
            "file": ABS_PATH,
            "create": BOOL,
            "user": _str_rule(
                "a user name, or '' to keep the file's owner",
                pattern=r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*$",
            ),
            "group": _str_rule(
                "a group name, or '' to keep the file's group",
                pattern=r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*$",
            ),
            "mode": MODE,
            "backup_keep": _int_rule(1, 1000, 5),  # deprecated alias of backups:keep
            "secret_keys": _list_rule(ENV_KEY, "a list of .env keys (e.g. [JWT_SECRET])"),
            "extra": _extra_rule(managed),
            "npm_version": _str_rule(
                "'' (read from node_modules/dotenv/package.json) or npm dotenv's version "
                "(e.g. 16.4.5)",
                pattern=r"^[0-9]+(?:\.[0-9]+){0,2}$",
            ),
        },
        "redis": {
            "enabled": BOOL,
            "pkg": NAME,
            "min_version": _str_rule(
                "'' (no check) or a Redis version such as 6.2 or 7.0.15",
                pattern=r"^[0-9]+(?:\.[0-9]+){0,2}$",
            ),
            "service": NAME,
            "config": ABS_PATH,
            "host": HOSTNAME,
            "bind": _Rule(
                f"a non-empty list, each {BIND_ADDR.expected}",
                lambda v: isinstance(v, list) and bool(v) and all(BIND_ADDR.check(a) for a in v),
            ),
            "allow_remote": BOOL,
            "port": _int_rule(1, 65535, 6379),
            "password": _str_rule(
                "a single-line string without spaces or quotes, or '' for none",
                pattern=r"^[^\s\"']*$",
                secret=True,
            ),
            "db": _int_rule(0, 15, 0),
            "maxmemory": _Rule(
                "auto (sized for this host's RAM), '' (leave redis.conf's as it is), 0 (no "
                "limit) or a Redis memory size such as 256mb or 1gb",
                lambda v: (
                    v in ("", "auto")
                    or (_is_int(v) and v >= 0)
                    or (isinstance(v, str) and bool(REDIS_MEMORY_RE.match(v)))
                ),
            ),
            "maxmemory_policy": _choice_rule(
                "noeviction",
                "allkeys-lru",
                "volatile-lru",
                "allkeys-lfu",
                "volatile-lfu",
                "allkeys-random",
                "volatile-random",
                "volatile-ttl",
            ),
            "appendonly": BOOL,
            "appendfsync": _choice_rule("always", "everysec", "no"),
            "remove_password": BOOL,
        },
        "queue": {
            "enabled": BOOL,
            "concurrency": _int_rule(1, 1000, 5),
        },
        "pm2": {
            "user": NAME,
            "home": ABS_PATH,
            "bin": OPT_ABS_PATH,
            "startup": BOOL,
            "log_warn_size": _size_rule(parse_size),
        },
        "remove_processes": _list_rule(
            PM2_NAME, "a list of pm2 process names (e.g. [prisma-studio])"
        ),
        "swap": {
            "enabled": BOOL,
            "file": ABS_PATH,
            "size": _size_rule(parse_size),
            "swappiness": _int_rule(0, 200, 10),
            "vfs_cache_pressure": _int_rule(0, 1000, 50),
            "overcommit_memory": _Rule(
                "0, 1 or 2 (1: Redis's advice), or '' / null to leave it alone",
                lambda v: v in ("", None) or (_is_int(as_int(v)) and as_int(v) in (0, 1, 2)),
            ),
            "sysctl_file": _str_rule(
                "an absolute path under /etc/sysctl.d/ ending in .conf",
                pattern=r"^/etc/sysctl\.d/[^/]+\.conf$",
                allow_empty=False,
            ),
        },
        "backend": {
            "name": PM2_NAME,
            "restart": BOOL,
            "force_restart": BOOL,
            "ready_patterns": _list_rule(
                _str_rule("a log line pattern", allow_empty=False),
                "a list of single-line log substrings",
            ),
            "ready_timeout": _int_rule(1, 3600, 60),
            "rollback": BOOL,
            "shadowed_env": _choice_rule("fail", "warn"),
        },
        "verify": {
            "enabled": BOOL,
            "url": _str_rule(
                "'' (no probe) or an http:// URL on this host (e.g. http://127.0.0.1:3000/health)",
                pattern=r"^https?://",
            ),
            "requests": _int_rule(1, 1000, 10),
            "limit_ms": _int_rule(1, 600000, 100),
        },
        # read by the orchestration on the master (orch/rollout.sls); a minion ignores it
        "rollout": {
            "target": _str_rule("a salt target on one line (e.g. 'hetzner-*')"),
            "tgt_type": _choice_rule(*ROLLOUT_TGT_TYPES),
            "canary": _str_rule(
                "'' (the first sorted minion id) or one minion id of the target",
                pattern=r"^[A-Za-z0-9_.-]+$",
            ),
            "batch": _int_rule(1, 10000, 1),
            "restart": BOOL,
        },
    }


def _suggest(key, known):
    close = difflib.get_close_matches(str(key), list(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def plain(value):
    """A plain copy of pillar data: Salt 3008 wraps the pillar in masking containers, and
    ``pillar.get`` called from a module returns every value as ``**********``."""
    if isinstance(value, dict):
        return {key: plain(sub) for key, sub in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(sub) for sub in value]
    return value


def _show(value, rule):
    return SECRET if rule.secret else repr(plain(value))


def _inside(path, directory):
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def backup_dir_check(settings, root=PILLAR_KEY):
    """
    The problems of ``backups:dir`` in the merged ``settings``: inside the directory of
    ``dotenv:file`` (or ``/``, which puts every backup next to its file), where the .env's
    backups could be committed or served, or an existing path that is not a directory.
    Read-only (one ``lstat``). Values the key rules refuse are skipped.
    """
    backups = settings.get("backups") if isinstance(settings.get("backups"), dict) else {}
    dotenv = settings.get("dotenv") if isinstance(settings.get("dotenv"), dict) else {}
    wanted, env_file = backups.get("dir"), dotenv.get("file")
    if not isinstance(wanted, str) or not _single_line(wanted) or not wanted.startswith("/"):
        return []
    key, fix = f"{root}:backups:dir", "use a directory outside it (default /var/backups/serverfix)"
    path = os.path.normpath(wanted)
    if isinstance(env_file, str) and env_file.startswith("/") and _single_line(env_file):
        app = os.path.dirname(os.path.normpath(env_file))
        real = [(path, app), (os.path.realpath(path), os.path.realpath(app))]
        if path == "/":
            return [
                f"{key}: '/' mirrors every file onto itself: the .env's backups would sit in "
                f"{app}, where git or the web server can see them; {fix}, or '' to keep them "
                "next to each file on purpose"
            ]
        if any(_inside(p, a) for p, a in real):
            return [
                f"{key}: {wanted} is inside {app}, the directory of {root}:dotenv:file: the "
                f".env's backups would sit in the app directory, where git or the web server "
                f"can see them; {fix}"
            ]
    if os.path.lexists(path) and not os.path.isdir(path):
        return [
            f"{key}: {wanted} exists and is not a directory; remove it or choose another "
            "directory (default /var/backups/serverfix)"
        ]
    return []


def cross_check(settings, root=PILLAR_KEY):
    """
    The problems between keys of the merged ``settings`` (defaults with the pillar on top): a
    process both removed and kept, a Redis reachable from other hosts without an explicit
    ``redis:allow_remote`` and a password, and a backup directory inside the app directory
    (:func:`backup_dir_check`). Defensive: values the key rules refuse are skipped.
    """
    errors = backup_dir_check(settings, root)
    backend = settings.get("backend") if isinstance(settings.get("backend"), dict) else {}
    kept = {f"{root}:backend:name": backend.get("name")}
    removed = settings.get("remove_processes")
    for name in removed if isinstance(removed, list) else []:
        for key, keep in kept.items():
            if isinstance(name, str) and isinstance(keep, str) and name.strip() == keep.strip():
                errors.append(
                    f"{root}:remove_processes: {name!r} is also {key}, the process the formula "
                    f"keeps (and restarts): Phase 3 would delete it; take it out of "
                    f"{root}:remove_processes or set {key} to the backend's pm2 name"
                )
    redis = settings.get("redis") if isinstance(settings.get("redis"), dict) else {}
    bind = redis.get("bind") if isinstance(redis.get("bind"), list) else []
    remote = [a for a in bind if bind_address(a) is not None and not is_loopback_bind(a)]
    if redis.get("enabled", True) is False or not remote:
        return errors
    if redis.get("allow_remote") is not True:
        errors.append(
            f"{root}:redis:bind: {', '.join(map(str, remote))} is not loopback (127.0.0.0/8, "
            f"::1): Redis would be reachable from other hosts; bind 127.0.0.1 -::1, or set "
            f"{root}:redis:allow_remote: true together with {root}:redis:password"
        )
    elif not redis.get("password"):  # a {"pillar": key} reference counts as set
        errors.append(
            f"{root}:redis:allow_remote: true needs {root}:redis:password: Redis on "
            f"{', '.join(map(str, remote))} would accept anyone without a password"
        )
    return errors


def validate(pillar, utils, root=PILLAR_KEY, cross=True):
    """
    The problems of the ``serverfix`` pillar mapping ``pillar`` as messages, one per problem
    (empty: valid). Unknown keys are reported with the closest known key (a likely typo), then
    the problems between keys (:func:`cross_check`, on the pillar merged over the defaults).
    ``utils`` is the caller's ``__utils__`` (for the size parser, the managed .env keys, the
    defaults and the merge). ``root`` starts every key in the messages (``config`` for a
    ``config=`` argument). ``cross=False``: the key rules only.
    """
    schema = pillar_schema(
        utils["serverfix_size.parse_size"], utils["serverfix_defaults.managed_env"]()
    )
    if pillar in (None, ""):
        return []
    if not isinstance(pillar, dict):
        return [
            f"{root}: {_show(pillar, _Rule('', None))} is not valid; expected a mapping of "
            "settings (see pillar.example)"
        ]
    errors = []
    for section, value in pillar.items():
        where = f"{root}:{section}"
        if section not in schema:
            errors.append(
                f"{where}: unknown key{_suggest(section, schema)}; known keys: {', '.join(schema)}"
            )
            continue
        spec = schema[section]
        if isinstance(spec, _Rule):
            if not spec.check(value):
                errors.append(
                    f"{where}: {_show(value, spec)} is not valid; expected {spec.expected}"
                )
            continue
        if not isinstance(value, dict):
            errors.append(
                f"{where}: {_show(value, _Rule('', None))} is not valid; "
                f"expected a mapping with keys {', '.join(spec)}"
            )
            continue
        for key, sub_value in value.items():
            sub_where = f"{where}:{key}"
            if key not in spec:
                errors.append(
                    f"{sub_where}: unknown key{_suggest(key, spec)}; known keys: {', '.join(spec)}"
                )
            elif not spec[key].check(sub_value):
                errors.append(
                    f"{sub_where}: {_show(sub_value, spec[key])} is not valid; "
                    f"expected {spec[key].expected}"
                )
    if not cross:
        return errors
    if "serverfix_settings.merge" not in utils:  # a caller that passes only the key helpers
        return errors + cross_check(pillar, root)
    merged = utils["serverfix_settings.merge"](utils["serverfix_defaults.defaults"](), pillar)
    return errors + cross_check(merged, root)
