"""
pm2: read and drive the pm2 process manager as the user that owns it.

Phases 3 and 5 of the runbook. Every function takes the owning ``user`` and ``pm2_home``:
pm2 runs as that user (``runuser``), with a clean, explicit environment and that
``PM2_HOME``. This module never starts a pm2 daemon: every pm2 command starts one when none
runs, and root doing so in a user's ``PM2_HOME`` locks the user out. So read-only calls with
no daemon read the saved ``dump.pm2`` instead, and mutating calls refuse.

``pm2 jlist`` carries the whole start-time environment of every app (secrets included): it is
read once per run (over the daemon's socket, ``_utils/serverfix_pm2rpc.py``; cached in
``__context__``), values are dropped, only key names are kept. Everything comes in as arguments
(no pillar); errors raise ``CommandExecutionError``. The pure parts (parsing, the per-run
cache) are in ``_utils/serverfix_pm2.py``, the masking rule in ``_utils/serverfix_mask.py``;
restarting with a readiness check and the ``.env`` rollback are in ``_modules/pm2_app.py``.
Standard library and salt only.
"""

import json
import logging
import os
import pwd
import shutil
import time
from typing import TYPE_CHECKING, Any

from salt.exceptions import CommandExecutionError

if TYPE_CHECKING:
    __salt__: dict[str, Any]
    __utils__: dict[str, Any]
    __context__: dict[str, Any]

log = logging.getLogger(__name__)

__virtualname__ = "pm2"

SANE_PATH = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
# nvm/volta/npm-prefix installs the operator may have used; '~' is the owning user's home
USER_BIN_GLOBS = [
    "~/.npm-global/bin",
    "~/.local/bin",
    "~/.volta/bin",
    "~/.nvm/versions/node/*/bin",
    "/usr/local/nvm/versions/node/*/bin",
    "/opt/nvm/versions/node/*/bin",
]


def __virtual__():
    # always loadable: preflight must be able to say "pm2 is missing" in plain words
    return __virtualname__


def _u(name):
    return __utils__[f"serverfix_pm2.{name}"]


# ---------------------------------------------------------------- names and secrets


def check_name(name, user=None, pm2_home="/root/.pm2", pm2_bin=""):
    """
    ``True`` when pm2 reads ``name`` as exactly one app name; else raises
    ``CommandExecutionError`` with ``info={"errors": [why]}``.

    pm2 reads ``all``, numbers (JavaScript's idea of one: ``12``, ``0x1f``, ``1e3``, ``''``),
    ``/regex/``, ecosystem file names and ``-`` (stdin) as something else; a leading ``-`` is
    an option. With ``user``, also a namespace that no app is named after (pm2 would act on
    every app in it), checked against the (cached) process list.

    CLI Example:

    .. code-block:: bash

        salt '*' pm2.check_name prisma-studio
        salt '*' pm2.check_name default user=root
    """
    problem = _u("name_problem")(name)
    if not problem and user is not None:
        # stop/restart/save never change names or namespaces, so a mutating call needs no
        # fresh `jlist` just to check its name; delete drops its name from the index
        index = _u("names_index")(__context__, (user, pm2_home))
        if index is None:
            procs = list_(user, pm2_home, pm2_bin)
            index = ({p["name"] for p in procs}, {p["namespace"] for p in procs})
        if name not in index[0] and name in index[1]:
            problem = (
                f"no app is named {name!r} but it is a pm2 namespace, so pm2 would act on "
                "every app in it"
            )
    if problem:
        raise CommandExecutionError(
            f"refusing pm2 process name: {problem}; use the app's own name",
            info={"errors": [problem]},
        )
    return True


def mask(text, secrets=(), user=None, pm2_home="/root/.pm2"):
    """
    Replace secrets in ``text`` with ``<secret>`` (the project's one rule,
    ``_utils/serverfix_mask.py``): the given ``secrets`` values (4+ characters; callers pass
    e.g. the Redis password and the .env's hidden values), anything after
    ``password=``/``token:``-like words, and passwords in URLs (``redis://:pw@host``). With
    ``user``, also the values of the secret-looking environment keys of that user's apps (seen
    by :func:`list`; they never leave this module).

    CLI Example:

    .. code-block:: bash

        salt '*' pm2.mask 'redis://:hunter22@127.0.0.1'
    """
    found = set(secrets or ())
    if user is not None:
        found |= _u("known_secrets")(__context__, (user, pm2_home))
    return __utils__["serverfix_mask.text"](text, found)


# ---------------------------------------------------------------- binary, user, daemon


def _user_entry(user):
    try:
        return pwd.getpwnam(user)
    except KeyError:
        raise CommandExecutionError(
            f"user {user!r} does not exist; pass the user that runs pm2 "
            '(ps -o user= -p "$(cat ~/.pm2/pm2.pid)")'
        ) from None


def find_bin(pm2_bin="", user="root"):
    """
    Absolute path of the pm2 executable to use: ``pm2_bin`` when given; else ``pm2`` looked up
    in /usr/local/bin, /usr/bin, ... and the owning ``user``'s ``~/.npm-global/bin``,
    ``~/.nvm/...``. Raises an error naming ``pm2_bin`` when pm2 is not there.

    CLI Example:

    .. code-block:: bash

        salt '*' pm2.find_bin user=deploy
        salt '*' pm2.find_bin /home/deploy/.nvm/versions/node/v20.11.1/bin/pm2
    """
    if pm2_bin:
        if (
            not os.path.isabs(pm2_bin)
            or not os.path.isfile(pm2_bin)
            or not os.access(pm2_bin, os.X_OK)
        ):
            raise CommandExecutionError(
                f"pm2_bin {pm2_bin!r} is not an executable file; pass the absolute path of pm2 "
                f"(as {user}: command -v pm2), or '' to search the usual places"
            )
        return pm2_bin
    dirs = _u("candidate_dirs")(user, SANE_PATH, USER_BIN_GLOBS)
    found = shutil.which("pm2", path=os.pathsep.join(dirs))
    if not found:
        raise CommandExecutionError(
            f"pm2 is not installed or not found (searched {', '.join(dirs)}); install it, or pass "
            "pm2_bin, its absolute path (as the pm2 user: command -v pm2)"
        )
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

        salt '*' pm2.version /usr/local/bin/pm2
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
        owner = _u("proc_uid")(pid)
    except OSError:
        return None
    if pid <= 0 or "God Daemon" not in cmdline:
        return None  # pid reused by something else
    uid = _user_entry(user).pw_uid
    if owner != uid:
        owner_name = _uid_name(owner)
        raise CommandExecutionError(
            f"the pm2 daemon in {pm2_home} (pid {pid}) runs as {owner_name}, not as user {user!r}; "
            f"if {owner_name} owns the apps pass user {owner_name!r}, otherwise stop that daemon "
            f"(as {owner_name}: PM2_HOME={pm2_home} pm2 kill) and start the apps as {user}"
        )
    return pid


def _uid_name(uid):
    return _u("uid_name")(uid)


def _check_home_owner(user, pm2_home):
    try:
        st = os.stat(pm2_home)
    except FileNotFoundError:
        return
    uid = _user_entry(user).pw_uid
    if st.st_uid != uid:
        raise CommandExecutionError(
            f"pm2_home {pm2_home} belongs to {_uid_name(st.st_uid)}, not to user {user!r}; pm2 "
            "must run as the owner of its PM2_HOME (pass that user, or that user's pm2_home)"
        )


# ---------------------------------------------------------------- running pm2


def calls(reset=False):
    """
    The pm2 calls made so far in this run (``__context__``): total and one entry per call
    (``jlist``, ``stop``..., ``rpc:getMonitorData``). ``reset=True`` starts counting afresh.

    CLI Example:

    .. code-block:: bash

        salt '*' pm2.calls
    """
    return _u("calls")(__context__, reset)


def _argv(args, user, pm2_home, pm2_bin):
    entry = _user_entry(user)
    # a clean, minimal environment: `restart --update-env` merges the CLI's whole environment
    # into the app's, so nothing of the minion's may be in it (and no LANG/USER to change)
    env = {"HOME": entry.pw_dir, "PATH": _path_for(pm2_bin), "PM2_HOME": pm2_home}
    command = ["env", "-i"] + [f"{k}={v}" for k, v in env.items()] + [pm2_bin] + list(args)
    if os.geteuid() == entry.pw_uid:
        return command
    if os.geteuid() != 0:
        raise CommandExecutionError(
            f"cannot run pm2 as {user!r}: this minion runs as uid {os.geteuid()}, not root"
        )
    return ["runuser", "-u", entry.pw_name, "--"] + command


def _run(args, user, pm2_home, pm2_bin, timeout=120):
    """Run pm2 as ``user`` against ``pm2_home``; only when its daemon already runs there."""
    _check_home_owner(user, pm2_home)
    if daemon_pid(user, pm2_home) is None:
        raise CommandExecutionError(
            f"no pm2 daemon runs for {user} in {pm2_home}, so no app is running there; serverfix "
            f"never starts one (start the apps as {user}: PM2_HOME={pm2_home} pm2 resurrect)"
        )
    pm2_bin = find_bin(pm2_bin, user)
    _u("count")(__context__, args[0])
    started = time.monotonic()
    ret = __salt__["cmd.run_all"](
        _argv(args, user, pm2_home, pm2_bin),
        python_shell=False,
        cwd="/",
        output_loglevel="quiet",
        ignore_retcode=True,
        timeout=timeout,
    )
    log.debug(
        "pm2 %s as %s (%s): rc %s in %.2fs",
        args[0],
        user,
        pm2_home,
        ret["retcode"],
        time.monotonic() - started,
    )
    if args[0] in ("stop", "restart", "delete"):
        # that app's pid/status/uptime changed: the next read asks pm2 again
        _u("mark_stale")(__context__, (user, pm2_home), args[1])
    return ret


def _fail(what, ret, user, pm2_home):
    # pm2 prints names and messages here, never env values; masked all the same
    output = _u("error_output")(ret["stdout"], ret["stderr"]) or "no error message"
    message = f"pm2 {what} failed (rc {ret['retcode']}): {output}"
    raise CommandExecutionError(mask(message, user=user, pm2_home=pm2_home))


# ---------------------------------------------------------------- reading the process list


def list_(user="root", pm2_home="/root/.pm2", pm2_bin="", refresh=False):
    """
    The apps pm2 manages for ``user`` in ``pm2_home``: one dict per process with ``name``,
    ``pm_id``, ``pid``, ``status``, ``memory`` (bytes), ``cpu``, ``restart_time``, ``pm_uptime``
    (epoch ms), ``out_log``, ``err_log``, ``env_keys`` (names only, never values), ``namespace``
    and ``source`` (``jlist``, or ``dump`` when no daemon runs: then nothing runs and the saved
    list is shown as ``stopped``, without starting a daemon).

    One ``pm2 jlist`` per run (its RPC call to the daemon, else the CLI): the result is cached
    in ``__context__``; a stop or restart makes
    the next read ask pm2 again, a delete just drops that app from the cached list.
    ``refresh=True`` always asks pm2; ``refresh="after_change"`` only when this run changed
    something in pm2 (a final check after the changes).

    CLI Example:

    .. code-block:: bash

        salt '*' pm2.list user=deploy pm2_home=/home/deploy/.pm2
    """
    key = (user, pm2_home)
    procs = _u("cached")(__context__, key, refresh)
    if procs is not None:
        return procs
    _check_home_owner(user, pm2_home)
    pid = daemon_pid(user, pm2_home)
    if pid is None:
        raws, source = _u("dump_entries")(pm2_home)[1], "dump"
    else:
        # jlist's own call over the daemon's socket (no node start), else the pm2 CLI
        rpc = __utils__["serverfix_pm2rpc.monitor_data"]
        raws, source = rpc(pm2_home, _user_entry(user).pw_uid, pid), "jlist"
        if raws is not None:
            _u("count")(__context__, "rpc:getMonitorData")
        else:
            ret = _run(["jlist"], user, pm2_home, pm2_bin)
            if ret["retcode"] != 0:
                _fail("jlist", ret, user, pm2_home)
            raws = _u("parse_jlist")(ret["stdout"])
    secrets = set()
    for env in _u("app_envs")(raws):
        secrets |= __utils__["serverfix_mask.env_secrets"](env)
    return _u("remember")(__context__, key, raws, source, secrets)


def status(name, user="root", pm2_home="/root/.pm2", pm2_bin=""):
    """
    The :func:`list` entry of app ``name`` (the first instance), or ``None`` when pm2 does not
    manage it.

    CLI Example:

    .. code-block:: bash

        salt '*' pm2.status intranet-backend
    """
    check_name(name)
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
    return [e.get("name") for e in _u("dump_entries")(pm2_home)[1] if isinstance(e, dict)]


def log_paths(name, user="root", pm2_home="/root/.pm2", pm2_bin=""):
    """
    The out/err log files of app ``name`` (every instance), from the process list, else pm2's
    default ``$PM2_HOME/logs/<name>-out.log``/``-error.log``.

    CLI Example:

    .. code-block:: bash

        salt '*' pm2.log_paths intranet-backend
    """
    check_name(name)
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
    secret-looking environment keys, the given ``secrets``, ``password=...``).

    CLI Example:

    .. code-block:: bash

        salt '*' pm2.log_tail intranet-backend lines=50
    """
    paths = log_paths(name, user, pm2_home, pm2_bin)  # lists first: that learns the secrets to mask
    out = []
    for path in paths:
        out += [
            mask(line, secrets, user, pm2_home)
            for line in __utils__["serverfix_files.tail_lines"](path, int(lines))
        ]
    return out


# ---------------------------------------------------------------- changing things


def stop(name, user="root", pm2_home="/root/.pm2", pm2_bin=""):
    """
    ``pm2 stop NAME`` as ``user``. Refuses ``all``, ids and namespaces; never starts a daemon.

    CLI Example:

    .. code-block:: bash

        salt '*' pm2.stop prisma-studio
    """
    check_name(name, user, pm2_home, pm2_bin)
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
    check_name(name, user, pm2_home, pm2_bin)
    ret = _run(["delete", name], user, pm2_home, pm2_bin)
    if ret["retcode"] != 0:
        _fail(f"delete {name}", ret, user, pm2_home)
    _u("forget")(__context__, (user, pm2_home), name)
    return True


def restart(name, user="root", pm2_home="/root/.pm2", pm2_bin="", update_env=True):
    """
    ``pm2 restart NAME --update-env`` as ``user``. pm2 returns 0 even when the app dies right
    after: ``pm2_app.restart_and_wait`` checks that it really came up. Refuses ``all``, ids
    and namespaces; never starts a daemon.

    CLI Example:

    .. code-block:: bash

        salt '*' pm2.restart intranet-backend
    """
    check_name(name, user, pm2_home, pm2_bin)
    ret = _run(
        ["restart", name] + (["--update-env"] if update_env else []), user, pm2_home, pm2_bin
    )
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
    check_name(name)
    _check_home_owner(user, pm2_home)
    source, entries = _u("dump_entries")(pm2_home)
    kept = [e for e in entries if not (isinstance(e, dict) and e.get("name") == name)]
    removed = len(entries) - len(kept)
    if not removed:
        return 0
    dump = os.path.join(pm2_home, "dump.pm2")
    origin = os.path.join(pm2_home, source)
    __utils__["serverfix_files.backup"](origin, keep=backup_keep)
    st = os.stat(origin)
    # pm2's own layout (JSON.stringify(list, '', 2)), owner and mode kept: pm2 keeps reading it
    data = _u("dump_bytes")(kept)
    __utils__["serverfix_files.atomic_write"](
        dump, data, mode=st.st_mode & 0o7777, uid=st.st_uid, gid=st.st_gid
    )
    _u("forget")(__context__, (user, pm2_home), name)
    return removed


def preflight(user="root", pm2_home="/root/.pm2", pm2_bin=""):
    """
    Check what the pm2 phases need; read-only (no pm2 call, no daemon started). Returns
    ``True`` when all is clear, else raises one ``CommandExecutionError`` with
    ``info={"errors": [message, ...], "arguments": [argument, ...]}``: each message says what
    is wrong and the fix, and ``arguments`` names, for each message, the argument it is about
    (``user``, ``pm2_home`` or ``pm2_bin``), so a formula can name its own setting.

    CLI Example:

    .. code-block:: bash

        salt '*' pm2.preflight user=deploy pm2_home=/home/deploy/.pm2
    """
    problems = []
    try:
        _user_entry(user)
    except CommandExecutionError as exc:
        problems.append(("user", str(exc)))
    else:
        try:
            found = find_bin(pm2_bin, user)
            if not shutil.which("node", path=_path_for(found)):
                problems.append(
                    (
                        "pm2_bin",
                        f"node not found next to {found} or in "
                        f"{', '.join(SANE_PATH)}; install Node.js there or pass pm2_bin, "
                        "a pm2 that sits next to its node (nvm)",
                    )
                )
        except CommandExecutionError as exc:
            problems.append(("pm2_bin", str(exc)))
        for argument, check in (("pm2_home", _check_home_owner), ("user", daemon_pid)):
            try:
                check(user, pm2_home)
            except CommandExecutionError as exc:
                problems.append((argument, str(exc)))
        if os.geteuid() not in (0, pwd.getpwnam(user).pw_uid):
            problems.append(
                (
                    "user",
                    f"cannot run pm2 as user {user!r}: the minion runs as uid "
                    f"{os.geteuid()}, not root",
                )
            )
    if problems:
        errors = [message for _, message in problems]
        arguments = [argument for argument, _ in problems]
        __utils__["serverfix_errors.raise_problems"](errors, arguments=arguments)
    return True


# ``list`` is the public name; ``list_`` avoids shadowing the builtin inside this file
__func_alias__ = {"list_": "list"}
