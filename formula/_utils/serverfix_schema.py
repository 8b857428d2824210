"""
The ``serverfix`` pillar's contract: one rule per key (``schema``) and :func:`validate`,
which names every problem with its key, the bad value (``<secret>`` for secrets) and the
expected form. Used by ``serverfix.validate_pillar``, the preflight and diagnose.
Reached as ``__utils__["serverfix_schema.validate"]``; stdlib and salt only.
"""

import difflib
import re

PILLAR_KEY = "serverfix"
SECRET = "<secret>"

# npm dotenv only reads keys made of these characters (anything else is silently ignored).
ENV_KEY_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
REDIS_MEMORY_RE = re.compile(r"^\d+(?:[kmg]b?)?$", re.IGNORECASE)
PM2_NAME_RE = re.compile(r"^[A-Za-z0-9_.@:+-][A-Za-z0-9_.@:+ -]*$")


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
ENV_KEY = _str_rule(
    "a .env key of letters, digits, '_', '.', '-' only (npm dotenv ignores others)",
    pattern=ENV_KEY_RE.pattern,
    allow_empty=False,
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
BIND_ADDR = _str_rule(
    "an IP address, optionally prefixed with '-' (optional) or '!' (e.g. 127.0.0.1, -::1)",
    pattern=r"^[-!]?[0-9A-Fa-f.:*]+$",
    allow_empty=False,
)


def _size_rule(parse_size):
    def check(value):
        if isinstance(value, bool) or not isinstance(value, (int, str)):
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
        },
        "redis": {
            "enabled": BOOL,
            "pkg": NAME,
            "service": NAME,
            "config": ABS_PATH,
            "host": HOSTNAME,
            "bind": _Rule(
                "a non-empty list of IP addresses (e.g. [127.0.0.1, -::1])",
                lambda v: isinstance(v, list) and bool(v) and all(BIND_ADDR.check(a) for a in v),
            ),
            "port": _int_rule(1, 65535, 6379),
            "password": _str_rule(
                "a single-line string without spaces or quotes, or '' for none",
                pattern=r"^[^\s\"']*$",
                secret=True,
            ),
            "db": _int_rule(0, 15, 0),
            "maxmemory": _Rule(
                "'' (no limit) or a Redis memory size such as 256mb or 1gb",
                lambda v: (
                    v == ""
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


def validate(pillar, utils):
    """
    The problems of the ``serverfix`` pillar mapping ``pillar`` as messages, one per problem
    (empty: valid). Unknown keys are reported with the closest known key (a likely typo).
    ``utils`` is the caller's ``__utils__`` (for the size parser and the managed .env keys).
    """
    schema = pillar_schema(
        utils["serverfix_size.parse_size"], utils["serverfix_defaults.managed_env"]()
    )
    if pillar in (None, ""):
        return []
    if not isinstance(pillar, dict):
        return [
            f"{PILLAR_KEY}: {pillar!r} is not valid; expected a mapping of settings (see pillar.example)"
        ]
    errors = []
    for section, value in pillar.items():
        where = f"{PILLAR_KEY}:{section}"
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
                f"{where}: {value!r} is not valid; expected a mapping with keys {', '.join(spec)}"
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
    return errors
