"""
The pure parts of the pm2 modules: how pm2 reads a process name, the ``pm2 jlist`` output and
the saved ``dump.pm2`` turned into summaries without environment values, and the per-run
bookkeeping (cached list, secrets to mask, call count) kept in the caller's ``__context__``.
Masking itself is the project's one rule in ``_utils/serverfix_mask.py``. No pillar, no pm2
call; standard library and salt only.

Reached from the execution modules as ``__utils__["serverfix_pm2.<function>"]``.
"""

import datetime
import glob
import json
import os
import pwd
import re

from salt.exceptions import CommandExecutionError

CACHE_KEY = "pm2.jlist"
CHANGED_KEY = "pm2.changed"  # (user, PM2_HOME)s this run changed something in
SECRETS_KEY = "pm2.secrets"
CALLS_KEY = "pm2.calls"
NAMES_KEY = "pm2.names"
STALE_KEY = "pm2.stale"
# pm2 reads a name containing one of these as an ecosystem file (Common.isConfigFile)
CONFIG_FILE_MARKS = (".json", ".yml", ".yaml", ".config.js", ".config.cjs", ".config.mjs")
# what JavaScript's isNaN() accepts as a number: pm2 then treats the name as a process id
JS_NUMBER_RE = re.compile(
    r"^[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|Infinity)$|^0[xX][0-9a-fA-F]+$"
    r"|^0[oO][0-7]+$|^0[bB][01]+$"
)
ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")


def candidate_dirs(user, sane_path, user_globs):
    """Where to look for pm2: ``sane_path``, then ``user_globs`` (``~`` is ``user``'s home),
    the newest node version first (nvm keeps several)."""
    try:
        home = pwd.getpwnam(user).pw_dir
    except KeyError:
        home = None
    dirs = list(sane_path)
    for pattern in user_globs:
        if pattern.startswith("~"):
            if not home:
                continue
            pattern = home + pattern[1:]
        dirs += sorted(glob.glob(pattern), key=_version_key, reverse=True)
    return dirs


def _version_key(path):
    return [int(n) for n in re.findall(r"\d+", path)]


def proc_uid(pid):
    """The real uid of process ``pid`` (from /proc), or None; raises OSError when it is gone."""
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as handle:
        for line in handle:
            if line.startswith("Uid:"):
                return int(line.split()[1])
    return None


def uid_name(uid):
    """The user name of ``uid``, or ``uid N`` when it has none."""
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, TypeError):
        return f"uid {uid}"


def when(epoch):
    """``epoch`` (seconds) as local ``YYYY-MM-DD HH:MM:SS``, for messages."""
    return datetime.datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def name_problem(name):
    """Why pm2 would not read ``name`` as one app name, from the name alone ('' when it would)."""
    if not isinstance(name, str):
        return f"{name!r} is not a string"
    if any(c in name for c in "\r\n\0"):
        return f"{name!r} contains a line break or NUL"
    if name == "all":
        return "'all' means every app to pm2"
    if not name.strip() or JS_NUMBER_RE.match(name.strip()):
        return f"{name!r} is read by pm2 as a process id"
    if name.startswith("-"):
        return f"{name!r} starts with '-' and is read as an option (or stdin)"
    if len(name) > 1 and name.startswith("/") and name.endswith("/"):
        return f"{name!r} is read by pm2 as a regular expression"
    for mark in CONFIG_FILE_MARKS:
        if mark in name:
            return f"{name!r} contains {mark!r} and is read by pm2 as an ecosystem file"
    return ""


def error_output(stdout, stderr):
    """The lines of pm2's output that say what went wrong (names and messages, no env values)."""
    lines = ANSI_RE.sub("", stderr + "\n" + stdout).splitlines()
    return " ".join(
        line.strip()
        for line in lines
        if any(word in line.lower() for word in ("error", "not found", "denied"))
    )


def parse_jlist(stdout):
    """
    The process list from ``pm2 jlist`` output: the JSON array is the last line, after any
    daemon-spawn, banner or "In-memory PM2 is out-of-date" noise. Returns the raw list (with
    environments: keep it in memory only). Raises without echoing the output (it holds secrets).
    """
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("["):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, list):
                return data
    raise CommandExecutionError(
        f"pm2 jlist printed no JSON process list ({len(stdout)} bytes of output, not shown: "
        "it may hold secrets)"
    )


def _shown(text):
    """Text read from a dump with bytes that are not UTF-8, as node would show it (U+FFFD)."""
    if not isinstance(text, str):
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def summary(raw, source):
    """One process as ``pm2.list`` returns it: no environment values, only key names."""
    env = raw.get("pm2_env") or raw  # dump.pm2 holds the pm2_env objects themselves
    monit = raw.get("monit") or {}
    return {
        "name": _shown(env.get("name")),
        "namespace": _shown(env.get("namespace", "default")),
        "pm_id": env.get("pm_id", raw.get("pm_id")),
        "pid": raw.get("pid", 0) if source == "jlist" else 0,
        "status": env.get("status") if source == "jlist" else "stopped",
        "memory": monit.get("memory", 0),
        "cpu": monit.get("cpu", 0),
        "restart_time": env.get("restart_time", 0),
        "pm_uptime": env.get("pm_uptime", 0),
        "out_log": _shown(env.get("pm_out_log_path", "")),
        "err_log": _shown(env.get("pm_err_log_path", "")),
        "env_keys": sorted(_shown(k) for k in (env.get("env") or {})),
        "source": source,
    }


def _read_dump(path):
    try:
        with open(path, "rb") as handle:
            # surrogateescape: bytes that are not UTF-8 are kept, so unsave writes them back as is
            data = json.loads(handle.read().decode("utf-8", "surrogateescape"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, list) else None


def dump_bytes(entries):
    """``entries`` as pm2 writes ``dump.pm2`` (``JSON.stringify(list, '', 2)``), with bytes that
    were not UTF-8 in the read dump written back unchanged."""
    return json.dumps(entries, indent=2, ensure_ascii=False).encode("utf-8", "surrogateescape")


def dump_entries(pm2_home):
    """``(file name, raw entries)`` of the saved list ``pm2 resurrect`` would start: ``dump.pm2``,
    else ``dump.pm2.bak`` as pm2 does. The entries hold environments: keep them in memory only."""
    for name in ("dump.pm2", "dump.pm2.bak"):
        data = _read_dump(os.path.join(pm2_home, name))
        if data is not None:
            return name, data
    return None, []


# ---------------------------------------------------------------- per-run bookkeeping


def count(context, command):
    """Note one pm2 CLI call in ``context`` (the caller's ``__context__``)."""
    context.setdefault(CALLS_KEY, []).append(command)


def calls(context, reset=False):
    """``{"total": n, "commands": [...]}`` of the pm2 CLI calls noted in ``context``."""
    made = list(context.get(CALLS_KEY, []))
    if reset:
        context[CALLS_KEY] = []
    return {"total": len(made), "commands": made}


def mark_stale(context, key, name):
    """App ``name`` of ``key`` (user, PM2_HOME) changed (pid, status): the next read asks pm2."""
    context.setdefault(STALE_KEY, {}).setdefault(key, set()).add(name)
    context.setdefault(CHANGED_KEY, set()).add(key)


def cached(context, key, refresh=False):
    """The cached summaries of ``key``, or ``None`` when pm2 must be asked (refresh, stale).
    ``refresh="after_change"`` asks pm2 only when this run changed something there."""
    if refresh == "after_change":
        refresh = key in context.get(CHANGED_KEY, set())
    stale = context.setdefault(STALE_KEY, {}).setdefault(key, set())
    cache = context.setdefault(CACHE_KEY, {})
    if key in cache and not refresh and not stale:
        return [dict(p) for p in cache[key]]
    stale.clear()
    return None


def app_envs(raws):
    """The ``env`` mapping of each raw process (for the caller's masking rule; memory only)."""
    return [(raw.get("pm2_env") or raw).get("env") or {} for raw in raws if isinstance(raw, dict)]


def remember(context, key, raws, source, secrets=()):
    """Cache the summaries of ``raws`` under ``key`` and keep ``secrets`` (the secret values of
    their environments, found by the caller) in memory for masking."""
    raws = [raw for raw in raws if isinstance(raw, dict)]
    context.setdefault(SECRETS_KEY, {})[key] = set(secrets or ())
    procs = [summary(raw, source) for raw in raws]
    context.setdefault(CACHE_KEY, {})[key] = procs
    context.setdefault(NAMES_KEY, {})[key] = (
        {p["name"] for p in procs},
        {p["namespace"] for p in procs},
    )
    return [dict(p) for p in procs]


def names_index(context, key):
    """``(app names, namespaces)`` of the last list of ``key``, or ``None`` before any list."""
    return context.get(NAMES_KEY, {}).get(key)


def known_secrets(context, key):
    """The secret env values of the apps of ``key`` seen by the last list."""
    return set(context.get(SECRETS_KEY, {}).get(key, ()))


def forget(context, key, name):
    """``name`` is gone: drop it from the cached list (deleting one app changes no other; `save`
    changes none), so the next state of the run needs no new ``jlist``."""
    context.setdefault(CHANGED_KEY, set()).add(key)
    procs = context.get(CACHE_KEY, {}).get(key)
    if procs is not None:
        procs[:] = [p for p in procs if p["name"] != name]
    context.get(STALE_KEY, {}).get(key, set()).discard(name)
    context.get(NAMES_KEY, {}).get(key, (set(), set()))[0].discard(name)
