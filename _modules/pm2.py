"""
pm2: read and drive the pm2 process manager as the user that owns it.

Phases 3 and 5 of the runbook. Every function takes the owning ``user`` and ``pm2_home``:
pm2 runs as that user (``runuser``), with a clean, explicit environment and that
``PM2_HOME``. This module never starts a pm2 daemon: every pm2 command starts one when none
runs, and root doing so in a user's ``PM2_HOME`` locks the user out. So read-only calls with
no daemon read the saved ``dump.pm2`` instead, and mutating calls refuse.

``pm2 jlist`` carries the whole start-time environment of every app (secrets included): it is
parsed once per run (cached in ``__context__``), values are dropped, only key names are kept.
Standard library and salt only.
"""

import glob
import json
import logging
import os
import pwd
import re
import shutil
import time

import salt.utils.data
from salt.exceptions import CommandExecutionError

log = logging.getLogger(__name__)

__virtualname__ = "pm2"

BIN_KEY = "serverfix:pm2:bin"
MASK = "<secret>"
CACHE_KEY = "pm2.jlist"
SECRETS_KEY = "pm2.secrets"
CALLS_KEY = "pm2.calls"
NAMES_KEY = "pm2.names"
STALE_KEY = "pm2.stale"
SANE_PATH = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
# nvm/volta/npm-prefix installs the operator may have used; '~' is the owning user's home
USER_BIN_GLOBS = ["~/.npm-global/bin", "~/.local/bin", "~/.volta/bin", "~/.nvm/versions/node/*/bin",
                  "/usr/local/nvm/versions/node/*/bin", "/opt/nvm/versions/node/*/bin"]
# pm2 reads a name containing one of these as an ecosystem file (Common.isConfigFile)
CONFIG_FILE_MARKS = (".json", ".yml", ".yaml", ".config.js", ".config.cjs", ".config.mjs")
# what JavaScript's isNaN() accepts as a number: pm2 then treats the name as a process id
JS_NUMBER_RE = re.compile(
    r"^[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|Infinity)$|^0[xX][0-9a-fA-F]+$"
    r"|^0[oO][0-7]+$|^0[bB][01]+$"
)
SECRET_NAME_RE = re.compile(r"PASS|SECRET|TOKEN|KEY|AUTH|CREDENTIAL|PRIVATE|COOKIE|SESSION|SALT", re.IGNORECASE)
SECRET_ASSIGN_RE = re.compile(r"((?:password|passwd|pwd|secret|token|api[_-]?key)\w*[\"']?\s*[=:]\s*[\"']?)([^\s\"',;]+)",
                              re.IGNORECASE)
URL_CREDENTIALS_RE = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)([^@\s/]+)@", re.IGNORECASE)
ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")


def __virtual__():
    # always loadable: preflight must be able to say "pm2 is missing" in plain words
    return __virtualname__


# ---------------------------------------------------------------- names and secrets


def name_problem(name, user=None, pm2_home="/root/.pm2", pm2_bin=""):
    """
    Why pm2 would not read ``name`` as exactly one app name ('' when it would).

    pm2 reads ``all``, numbers (JavaScript's idea of one: ``12``, ``0x1f``, ``1e3``, ``''``),
    ``/regex/``, ecosystem file names and ``-`` (stdin) as something else; a leading ``-`` is
    an option. With ``user``, also a namespace that no app is named after (pm2 would act on
    every app in it), checked against the (cached) process list.

    CLI Example:

    .. code-block:: bash

        salt '*' pm2.name_problem all
        salt '*' pm2.name_problem default user=root
    """
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
    if user is not None:
        names, namespaces = _names_index(user, pm2_home, pm2_bin)
        if name not in names and name in namespaces:
            return (f"no app is named {name!r} but it is a pm2 namespace, so pm2 would act on every app "
                    "in it")
    return ""


def _names_index(user, pm2_home, pm2_bin):
    """(app names, namespaces) from the last list: stop/restart/save never change them, so a
    mutating call needs no fresh ``jlist`` just to check its name; delete drops its name."""
    index = __context__.get(NAMES_KEY, {}).get((user, pm2_home))  # pylint: disable=undefined-variable
    if index is None:
        procs = list_(user, pm2_home, pm2_bin)
        index = ({p["name"] for p in procs}, {p["namespace"] for p in procs})
    return index


def _check_name(name, user=None, pm2_home="/root/.pm2", pm2_bin=""):
    problem = name_problem(name, user, pm2_home, pm2_bin)
    if problem:
        raise CommandExecutionError(f"refusing pm2 process name: {problem}; use the app's own name")


def mask(text, secrets=(), user=None, pm2_home="/root/.pm2"):
    """
    Replace secrets in ``text`` with ``<secret>``: the given values (4+ characters), anything
    after ``password=``/``token:``-like words, and passwords in URLs (``redis://:pw@host``).
    With ``user``, also the Redis password and the values of the secret-looking environment
    keys of that user's apps (seen by :func:`list`; they never leave this module).

    CLI Example:

    .. code-block:: bash

        salt '*' pm2.mask 'redis://:hunter22@127.0.0.1'
    """
    secrets = set(secrets or ())
    if user is not None:
        secrets |= _known_secrets(user, pm2_home)
    for value in sorted({str(s) for s in secrets if s is not None and len(str(s)) >= 4}, key=len, reverse=True):
        text = text.replace(value, MASK)
    text = SECRET_ASSIGN_RE.sub(lambda m: m.group(1) + MASK, text)
    return URL_CREDENTIALS_RE.sub(lambda m: m.group(1) + MASK + "@", text)


def _env_secrets(env):
    """Values of secret-looking keys of an app's environment (kept in memory only, for masking);
    pm2 nests the ecosystem file's ``env`` block under the app's name, so nested blocks count too."""
    found = set()
    for key, value in (env or {}).items():
        if isinstance(value, dict):
            found |= _env_secrets(value)
        elif SECRET_NAME_RE.search(str(key)) and isinstance(value, (str, int)) and not isinstance(value, bool):
            found.add(str(value))
    return found


def _pillar(key, default=""):
    # __pillar__, not pillar.get: Salt 3008's pillar.get hands modules masked values ("**********")
    return salt.utils.data.traverse_dict_and_list(__pillar__, key, default)  # pylint: disable=undefined-variable


def _known_secrets(user, pm2_home):
    found = set(__context__.get(SECRETS_KEY, {}).get((user, pm2_home), ()))  # pylint: disable=undefined-variable
    password = _pillar("serverfix:redis:password")
    if password:
        found.add(str(password))
    return found


# ---------------------------------------------------------------- binary, user, daemon


def _user_entry(user):
    try:
        return pwd.getpwnam(user)
    except KeyError:
        raise CommandExecutionError(  # pylint: disable=raise-missing-from
            f"serverfix:pm2:user: user {user!r} does not exist; set it to the user that runs pm2 "
            "(ps -o user= -p \"$(cat ~/.pm2/pm2.pid)\")")


def _candidate_dirs(user):
    try:
        home = pwd.getpwnam(user).pw_dir
    except KeyError:
        home = None
    dirs = list(SANE_PATH)
    for pattern in USER_BIN_GLOBS:
        if pattern.startswith("~"):
            if not home:
                continue
            pattern = home + pattern[1:]
        # newest node version first (nvm keeps several)
        dirs += sorted(glob.glob(pattern), key=_version_key, reverse=True)
    return dirs


def _version_key(path):
    return [int(n) for n in re.findall(r"\d+", path)]


def find_bin(pm2_bin="", user="root"):
    """
    Absolute path of the pm2 executable to use.

    ``pm2_bin`` (or the pillar ``serverfix:pm2:bin``) when set; else ``pm2`` looked up in
    /usr/local/bin, /usr/bin, ... and the owning user's ``~/.npm-global/bin``, ``~/.nvm/...``.
    Raises an error naming ``serverfix:pm2:bin`` when pm2 is not there.

    CLI Example:

    .. code-block:: bash

        salt '*' pm2.find_bin user=deploy
    """
    pm2_bin = pm2_bin or _pillar(BIN_KEY)
    if pm2_bin:
        if not os.path.isabs(pm2_bin) or not os.path.isfile(pm2_bin) or not os.access(pm2_bin, os.X_OK):
            raise CommandExecutionError(
                f"{BIN_KEY}: {pm2_bin!r} is not an executable file; set it to the absolute path of pm2 "
                f"(as {user}: command -v pm2), or to '' to search the usual places")
        return pm2_bin
    dirs = _candidate_dirs(user)
    found = shutil.which("pm2", path=os.pathsep.join(dirs))
    if not found:
        raise CommandExecutionError(
            f"pm2 is not installed or not found (searched {', '.join(dirs)}); install it, or set the pillar "
            f"{BIN_KEY} to its absolute path (as the pm2 user: command -v pm2)")
    return found


def _path_for(pm2_bin):
    # nvm-style installs keep node next to pm2: put that directory first
    dirs = [os.path.dirname(pm2_bin), os.path.dirname(os.path.realpath(pm2_bin))]
    return os.pathsep.join(dict.fromkeys(dirs + SANE_PATH))


def version(pm2_bin="", user="root"):
    """
    The pm2 version, read from its ``package.json`` (calling pm2 would start a daemon).

    CLI Example:

    .. code-block:: bash

        salt '*' pm2.version
    """
    real = os.path.realpath(find_bin(pm2_bin, user))
    for parent in (os.path.dirname(os.path.dirname(real)), os.path.dirname(real)):
        manifest = os.path.join(parent, "package.json")
        try:
            with open(manifest, encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, ValueError):
            continue
        if data.get("name") == "pm2":
            return data.get("version")
    return None


def _proc_uid(pid):
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as handle:
        for line in handle:
            if line.startswith("Uid:"):
                return int(line.split()[1])
    return None


def daemon_pid(user="root", pm2_home="/root/.pm2"):
    """
    PID of the pm2 daemon running in ``pm2_home``, or ``None`` when none runs (a stale
    ``pm2.pid`` is ignored). Raises when the daemon belongs to another user than ``user``
    (root having started one in a user's PM2_HOME, the takeover trap). Read-only.

    CLI Example:

    .. code-block:: bash

        salt '*' pm2.daemon_pid user=deploy pm2_home=/home/deploy/.pm2
    """
    try:
        with open(os.path.join(pm2_home, "pm2.pid"), encoding="ascii") as handle:
            pid = int(handle.read().strip() or 0)
    except (OSError, ValueError):
        return None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            cmdline = handle.read().decode("utf-8", "replace")
        owner = _proc_uid(pid)
    except OSError:
        return None
    if pid <= 0 or "God Daemon" not in cmdline:
        return None  # pid reused by something else
    uid = _user_entry(user).pw_uid
    if owner != uid:
        owner_name = _uid_name(owner)
        raise CommandExecutionError(
            f"the pm2 daemon in {pm2_home} (pid {pid}) runs as {owner_name}, not as serverfix:pm2:user {user!r}; "
            f"if {owner_name} owns the apps set serverfix:pm2:user to {owner_name!r}, otherwise stop that daemon "
            f"(as {owner_name}: PM2_HOME={pm2_home} pm2 kill) and start the apps as {user}")
    return pid


def _uid_name(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, TypeError):
        return f"uid {uid}"


def _check_home_owner(user, pm2_home):
    try:
        st = os.stat(pm2_home)
    except FileNotFoundError:
        return
    uid = _user_entry(user).pw_uid
    if st.st_uid != uid:
        raise CommandExecutionError(
            f"serverfix:pm2:home: {pm2_home} belongs to {_uid_name(st.st_uid)}, not to serverfix:pm2:user "
            f"{user!r}; pm2 must run as the owner of its PM2_HOME (set serverfix:pm2:user or serverfix:pm2:home)")


# ---------------------------------------------------------------- running pm2


def _count(command):
    __context__.setdefault(CALLS_KEY, []).append(command)  # pylint: disable=undefined-variable


def calls(reset=False):
    """
    The pm2 CLI invocations made so far in this run (``__context__``): total and one entry
    per call (``jlist``, ``stop``...). ``reset=True`` starts counting afresh.

    CLI Example:

    .. code-block:: bash

        salt '*' pm2.calls
    """
    made = list(__context__.get(CALLS_KEY, []))  # pylint: disable=undefined-variable
    if reset:
        __context__[CALLS_KEY] = []  # pylint: disable=undefined-variable
    return {"total": len(made), "commands": made}


def _argv(args, user, pm2_home, pm2_bin):
    entry = _user_entry(user)
    # a clean, minimal environment: `restart --update-env` merges the CLI's whole environment
    # into the app's, so nothing of the minion's may be in it (and no LANG/USER to change)
    env = {"HOME": entry.pw_dir, "PATH": _path_for(pm2_bin), "PM2_HOME": pm2_home}
    command = ["env", "-i"] + [f"{k}={v}" for k, v in env.items()] + [pm2_bin] + list(args)
    if os.geteuid() == entry.pw_uid:
        return command
    if os.geteuid() != 0:
        raise CommandExecutionError(f"cannot run pm2 as {user!r}: this minion runs as uid {os.geteuid()}, not root")
    return ["runuser", "-u", entry.pw_name, "--"] + command


def _run(args, user, pm2_home, pm2_bin, timeout=120):
    """Run pm2 as ``user`` against ``pm2_home``; only when its daemon already runs there."""
    _check_home_owner(user, pm2_home)
    if daemon_pid(user, pm2_home) is None:
        raise CommandExecutionError(
            f"no pm2 daemon runs for {user} in {pm2_home}, so no app is running there; serverfix never starts "
            f"one (start the apps as {user}: PM2_HOME={pm2_home} pm2 resurrect)")
    pm2_bin = find_bin(pm2_bin, user)
    _count(args[0])
    started = time.monotonic()
    ret = __salt__["cmd.run_all"](  # pylint: disable=undefined-variable
        _argv(args, user, pm2_home, pm2_bin), python_shell=False, cwd="/", output_loglevel="quiet",
        ignore_retcode=True, timeout=timeout)
    log.debug("pm2 %s as %s (%s): rc %s in %.2fs", args[0], user, pm2_home, ret["retcode"],
              time.monotonic() - started)
    if args[0] in ("stop", "restart", "delete"):
        # that app's pid/status/uptime changed: the next read asks pm2 again
        __context__.setdefault(STALE_KEY, {}).setdefault((user, pm2_home), set()).add(args[1])  # pylint: disable=undefined-variable
    return ret


def _forget(user, pm2_home, name):
    """``name`` is gone: drop it from the cached list (deleting one app changes no other; `save`
    changes none), so the next state of the run needs no new ``jlist``."""
    cached = __context__.get(CACHE_KEY, {}).get((user, pm2_home))  # pylint: disable=undefined-variable
    if cached is not None:
        cached[:] = [p for p in cached if p["name"] != name]
    __context__.get(STALE_KEY, {}).get((user, pm2_home), set()).discard(name)  # pylint: disable=undefined-variable
    __context__.get(NAMES_KEY, {}).get((user, pm2_home), (set(), set()))[0].discard(name)  # pylint: disable=undefined-variable


def _fail(what, ret, user, pm2_home):
    # pm2 prints names and messages here, never env values; masked all the same
    lines = ANSI_RE.sub("", ret["stderr"] + "\n" + ret["stdout"]).splitlines()
    output = " ".join(line.strip() for line in lines
                      if any(word in line.lower() for word in ("error", "not found", "denied")))
    raise CommandExecutionError(mask(f"pm2 {what} failed (rc {ret['retcode']}): {output or 'no error message'}",
                                     user=user, pm2_home=pm2_home))


# ---------------------------------------------------------------- reading the process list


def _parse_jlist(stdout):
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
    raise CommandExecutionError(f"pm2 jlist printed no JSON process list ({len(stdout)} bytes of output, not shown: "
                                "it may hold secrets)")


def _summary(raw, source):
    """One process as returned by :func:`list`: no environment values, only key names."""
    env = raw.get("pm2_env") or raw  # dump.pm2 holds the pm2_env objects themselves
    monit = raw.get("monit") or {}
    return {
        "name": env.get("name"),
        "namespace": env.get("namespace", "default"),
        "pm_id": env.get("pm_id", raw.get("pm_id")),
        "pid": raw.get("pid", 0) if source == "jlist" else 0,
        "status": env.get("status") if source == "jlist" else "stopped",
        "memory": monit.get("memory", 0),
        "cpu": monit.get("cpu", 0),
        "restart_time": env.get("restart_time", 0),
        "pm_uptime": env.get("pm_uptime", 0),
        "out_log": env.get("pm_out_log_path", ""),
        "err_log": env.get("pm_err_log_path", ""),
        "env_keys": sorted((env.get("env") or {}).keys()),
        "source": source,
    }


def _read_dump(path):
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, list) else None


def _dump_entries(pm2_home):
    """``(file name, raw entries)`` of the saved list ``pm2 resurrect`` would start: ``dump.pm2``,
    else ``dump.pm2.bak`` as pm2 does. The entries hold environments: keep them in memory only."""
    for name in ("dump.pm2", "dump.pm2.bak"):
        data = _read_dump(os.path.join(pm2_home, name))
        if data is not None:
            return name, data
    return None, []


def list_(user="root", pm2_home="/root/.pm2", pm2_bin="", refresh=False):
    """
    The apps pm2 manages for ``user`` in ``pm2_home``: one dict per process with ``name``,
    ``pm_id``, ``pid``, ``status``, ``memory`` (bytes), ``cpu``, ``restart_time``, ``pm_uptime``
    (epoch ms), ``out_log``, ``err_log``, ``env_keys`` (names only, never values), ``namespace``
    and ``source`` (``jlist``, or ``dump`` when no daemon runs: then nothing runs and the saved
    list is shown as ``stopped``, without starting a daemon).

    One ``pm2 jlist`` per run: the result is cached in ``__context__``; a stop or restart makes
    the next read ask pm2 again, a delete just drops that app from the cached list.

    CLI Example:

    .. code-block:: bash

        salt '*' pm2.list user=deploy pm2_home=/home/deploy/.pm2
    """
    cache = __context__.setdefault(CACHE_KEY, {})  # pylint: disable=undefined-variable
    key = (user, pm2_home)
    stale = __context__.setdefault(STALE_KEY, {}).setdefault(key, set())  # pylint: disable=undefined-variable
    if key in cache and not refresh and not stale:
        return [dict(p) for p in cache[key]]
    stale.clear()
    _check_home_owner(user, pm2_home)
    if daemon_pid(user, pm2_home) is None:
        raws, source = _dump_entries(pm2_home)[1], "dump"
    else:
        ret = _run(["jlist"], user, pm2_home, pm2_bin)
        if ret["retcode"] != 0:
            _fail("jlist", ret, user, pm2_home)
        raws, source = _parse_jlist(ret["stdout"]), "jlist"
    secrets = set()
    raws = [raw for raw in raws if isinstance(raw, dict)]
    for raw in raws:
        secrets |= _env_secrets((raw.get("pm2_env") or raw).get("env"))
    __context__.setdefault(SECRETS_KEY, {})[key] = secrets  # pylint: disable=undefined-variable
    cache[key] = [_summary(raw, source) for raw in raws]
    __context__.setdefault(NAMES_KEY, {})[key] = (  # pylint: disable=undefined-variable
        {p["name"] for p in cache[key]}, {p["namespace"] for p in cache[key]})
    return [dict(p) for p in cache[key]]


def status(name, user="root", pm2_home="/root/.pm2", pm2_bin=""):
    """
    The :func:`list` entry of app ``name`` (the first instance), or ``None`` when pm2 does not
    manage it.

    CLI Example:

    .. code-block:: bash

        salt '*' pm2.status intranet-backend
    """
    _check_name(name)
    return next((p for p in list_(user, pm2_home, pm2_bin) if p["name"] == name), None)


def saved_names(user="root", pm2_home="/root/.pm2"):
    """
    Names in the saved list (``$PM2_HOME/dump.pm2``) that ``pm2 resurrect`` and the boot
    script would start again. Read-only; no pm2 call.

    CLI Example:

    .. code-block:: bash

        salt '*' pm2.saved_names user=deploy pm2_home=/home/deploy/.pm2
    """
    _check_home_owner(user, pm2_home)
    return [e.get("name") for e in _dump_entries(pm2_home)[1] if isinstance(e, dict)]


def log_paths(name, user="root", pm2_home="/root/.pm2", pm2_bin=""):
    """
    The out/err log files of app ``name`` (every instance), from the process list, else pm2's
    default ``$PM2_HOME/logs/<name>-out.log``/``-error.log``.

    CLI Example:

    .. code-block:: bash

        salt '*' pm2.log_paths intranet-backend
    """
    _check_name(name)
    paths = []
    for proc in list_(user, pm2_home, pm2_bin):
        if proc["name"] == name:
            paths += [proc["out_log"], proc["err_log"]]
    if not paths:
        base = os.path.join(pm2_home, "logs", name.replace(" ", "-"))
        paths = [f"{base}-out.log", f"{base}-error.log"]
    return [p for p in dict.fromkeys(paths) if p and p != "/dev/null"]


def log_tail(name, lines=200, user="root", pm2_home="/root/.pm2", pm2_bin="", secrets=()):
    """
    Recent log lines of app ``name``: up to ``lines`` from its out log, then up to ``lines``
    from its error log, read from the files (no pm2 call), secrets masked (values of the app's
    secret-looking environment keys, the Redis password, ``secrets``, ``password=...``).

    CLI Example:

    .. code-block:: bash

        salt '*' pm2.log_tail intranet-backend lines=50
    """
    paths = log_paths(name, user, pm2_home, pm2_bin)  # lists first: that learns the secrets to mask
    out = []
    for path in paths:
        out += [mask(line, secrets, user, pm2_home) for line in __utils__["serverfix_files.tail_lines"](path, int(lines))]  # pylint: disable=undefined-variable
    return out


# ---------------------------------------------------------------- changing things


def stop(name, user="root", pm2_home="/root/.pm2", pm2_bin=""):
    """
    ``pm2 stop NAME`` as ``user``. Refuses ``all``, ids and namespaces; never starts a daemon.

    CLI Example:

    .. code-block:: bash

        salt '*' pm2.stop prisma-studio
    """
    _check_name(name, user, pm2_home, pm2_bin)
    ret = _run(["stop", name], user, pm2_home, pm2_bin)
    if ret["retcode"] != 0:
        _fail(f"stop {name}", ret, user, pm2_home)
    return True


def delete(name, user="root", pm2_home="/root/.pm2", pm2_bin=""):
    """
    ``pm2 delete NAME`` as ``user`` (stops it too; its log files stay). Not persistent until
    :func:`save`. Refuses ``all``, ids and namespaces; never starts a daemon.

    CLI Example:

    .. code-block:: bash

        salt '*' pm2.delete prisma-studio
    """
    _check_name(name, user, pm2_home, pm2_bin)
    ret = _run(["delete", name], user, pm2_home, pm2_bin)
    if ret["retcode"] != 0:
        _fail(f"delete {name}", ret, user, pm2_home)
    _forget(user, pm2_home, name)
    return True


def restart(name, user="root", pm2_home="/root/.pm2", pm2_bin="", update_env=True):
    """
    ``pm2 restart NAME --update-env`` as ``user``. pm2 returns 0 even when the app dies right
    after: the ``pm2.restarted_ready`` state checks that it really came up. Refuses ``all``, ids
    and namespaces; never starts a daemon.

    CLI Example:

    .. code-block:: bash

        salt '*' pm2.restart intranet-backend
    """
    _check_name(name, user, pm2_home, pm2_bin)
    ret = _run(["restart", name] + (["--update-env"] if update_env else []), user, pm2_home, pm2_bin)
    if ret["retcode"] != 0:
        _fail(f"restart {name}", ret, user, pm2_home)
    return True


def save(user="root", pm2_home="/root/.pm2", pm2_bin="", force=False):
    """
    ``pm2 save`` as ``user``: the running list becomes what a reboot or ``pm2 resurrect``
    starts (the previous one is kept in ``dump.pm2.bak``). pm2 skips saving an empty list
    unless ``force``.

    CLI Example:

    .. code-block:: bash

        salt '*' pm2.save user=deploy pm2_home=/home/deploy/.pm2
    """
    ret = _run(["save"] + (["--force"] if force else []), user, pm2_home, pm2_bin)
    if ret["retcode"] != 0:
        _fail("save", ret, user, pm2_home)
    return True


def unsave(name, user="root", pm2_home="/root/.pm2", backup_keep=5):
    """
    Remove app ``name`` from the saved list (``dump.pm2``) without pm2 and without touching
    the other saved apps; a serverfix backup of the dump is kept first. For when no daemon
    runs, or when ``pm2 save`` would also drop other saved apps that are not running.
    Returns the number of entries removed.

    CLI Example:

    .. code-block:: bash

        salt '*' pm2.unsave prisma-studio
    """
    _check_name(name)
    _check_home_owner(user, pm2_home)
    source, entries = _dump_entries(pm2_home)
    kept = [e for e in entries if not (isinstance(e, dict) and e.get("name") == name)]
    removed = len(entries) - len(kept)
    if not removed:
        return 0
    dump = os.path.join(pm2_home, "dump.pm2")
    origin = os.path.join(pm2_home, source)
    __utils__["serverfix_files.backup"](origin, keep=backup_keep)  # pylint: disable=undefined-variable
    st = os.stat(origin)
    # pm2's own layout (JSON.stringify(list, '', 2)), owner and mode kept: pm2 keeps reading it
    data = json.dumps(kept, indent=2, ensure_ascii=False).encode("utf-8")
    __utils__["serverfix_files.atomic_write"](  # pylint: disable=undefined-variable
        dump, data, mode=st.st_mode & 0o7777, uid=st.st_uid, gid=st.st_gid)
    _forget(user, pm2_home, name)
    return removed


def preflight(user="root", pm2_home="/root/.pm2", pm2_bin=""):
    """
    Problems that would stop the pm2 phases, as messages naming the pillar key and the fix
    (empty list: all clear). Read-only: no pm2 call, no daemon started.

    CLI Example:

    .. code-block:: bash

        salt '*' pm2.preflight user=deploy pm2_home=/home/deploy/.pm2
    """
    errors = []
    try:
        _user_entry(user)
    except CommandExecutionError as exc:
        return [str(exc)]
    try:
        found = find_bin(pm2_bin, user)
        if not shutil.which("node", path=_path_for(found)):
            errors.append(f"node not found next to {found} or in {', '.join(SANE_PATH)}; install Node.js there "
                          f"or set {BIN_KEY} to a pm2 that sits next to its node (nvm)")
    except CommandExecutionError as exc:
        errors.append(str(exc))
    for check in (_check_home_owner, daemon_pid):
        try:
            check(user, pm2_home)
        except CommandExecutionError as exc:
            errors.append(str(exc))
    if os.geteuid() not in (0, pwd.getpwnam(user).pw_uid):
        errors.append(f"serverfix:pm2:user: cannot run pm2 as {user!r}: the minion runs as uid {os.geteuid()}, "
                      "not root")
    return errors


# ``list`` is the public name; ``list_`` avoids shadowing the builtin inside this file
__func_alias__ = {"list_": "list"}
