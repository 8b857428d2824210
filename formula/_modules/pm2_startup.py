"""
pm2_startup: pm2 at boot, so that what pm2 runs survives a reboot.

Two things make it survive: the systemd unit ``pm2-<user>.service`` that ``pm2 startup systemd``
writes (``ExecStart=pm2 resurrect`` with ``PM2_HOME=<home>/.pm2``) enabled, and the app in the
saved list ``$PM2_HOME/dump.pm2`` that ``pm2 resurrect`` starts. ``status`` and ``plan`` read
both (``systemctl is-enabled``, the unit file, the dump's names: never its environments);
``startup`` runs ``pm2 startup`` and ``save`` runs ``pm2 save`` after a backup of the dump.

Generic: everything comes in as arguments (no pillar). Errors raise ``CommandExecutionError``.
Standard library and salt only.
"""

import os
import pwd
import shutil
from typing import TYPE_CHECKING, Any

from salt.exceptions import CommandExecutionError, SaltInvocationError

if TYPE_CHECKING:
    __salt__: dict[str, Any]
    __utils__: dict[str, Any]

__virtualname__ = "pm2_startup"

UNIT_DIRS = ("etc/systemd/system", "usr/lib/systemd/system", "lib/systemd/system")
SANE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def __virtual__():
    return __virtualname__


def unit_name(user="root"):
    """
    The systemd unit ``pm2 startup systemd -u <user>`` writes: ``pm2-<user>.service``.

    CLI Example:

    .. code-block:: bash

        salt '*' pm2_startup.unit_name deploy
    """
    return f"pm2-{user}.service"


def home_for(pm2_home="/root/.pm2"):
    """
    The ``--hp`` to give ``pm2 startup`` for ``pm2_home``: pm2 writes ``PM2_HOME=<hp>/.pm2``
    into the unit, so ``pm2_home`` must be named ``.pm2``; another name raises
    ``SaltInvocationError`` (the unit would resurrect another PM2_HOME).

    CLI Example:

    .. code-block:: bash

        salt '*' pm2_startup.home_for /home/deploy/.pm2
    """
    path = os.path.normpath(pm2_home or "")
    if not os.path.isabs(path) or os.path.basename(path) != ".pm2":
        raise SaltInvocationError(
            f"pm2_home {pm2_home!r}: pm2 startup can only write a unit for a PM2_HOME named "
            "<home>/.pm2 (it sets PM2_HOME=<--hp>/.pm2); write the unit by hand for this one"
        )
    return os.path.dirname(path)


def _unit_settings(path):
    """``{"User": ..., "PM2_HOME": ...}`` of the unit file at ``path`` (missing keys left out)."""
    found = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return found
    for line in lines:
        key, _, value = line.strip().partition("=")
        if key == "User":
            found["User"] = value.strip()
        elif key == "Environment" and value.strip().strip('"').startswith("PM2_HOME="):
            found["PM2_HOME"] = value.strip().strip('"').split("=", 1)[1]
    return found


def _default_home(user):
    try:
        return os.path.join(pwd.getpwnam(user).pw_dir, ".pm2")
    except KeyError:
        return f"~{user}/.pm2"


def status(user="root", pm2_home="/root/.pm2", root="/"):
    """
    Whether pm2 for ``user`` in ``pm2_home`` starts at boot; read-only. Returns ``{"unit",
    "path" (the unit file, None when missing), "state" (what ``systemctl is-enabled`` says:
    enabled, disabled, masked, not-found, ...), "enabled", "unit_user", "unit_pm2_home",
    "problems" (one sentence each), "ok"}``.

    root
        The file system root systemd's unit files are read under (``systemctl --root``): ``/``,
        or a test's directory tree.

    CLI Example:

    .. code-block:: bash

        salt '*' pm2_startup.status deploy /home/deploy/.pm2
    """
    unit = unit_name(user)
    path = next(
        (
            os.path.join(root, d, unit)
            for d in UNIT_DIRS
            if os.path.isfile(os.path.join(root, d, unit))
        ),
        None,
    )
    state = "unknown"
    if shutil.which("systemctl") is None:
        problems = ["systemctl is not on PATH: not a systemd host, pm2 startup systemd cannot work"]
    else:
        argv = ["systemctl"] + ([f"--root={root}"] if root not in ("", "/") else [])
        ret = __salt__["cmd.run_all"](
            argv + ["is-enabled", unit],
            python_shell=False,
            ignore_retcode=True,
            output_loglevel="quiet",
            env={"LC_ALL": "C"},
        )
        out = (ret["stdout"] or "").strip().splitlines()
        state = out[-1].strip() if out else "not-found"
        problems = []
    settings = _unit_settings(path) if path else {}
    if path is None:
        problems.append(f"{unit} is not installed: pm2 startup systemd never ran for {user}")
    elif state not in ("enabled", "unknown"):
        problems.append(f"{unit} is {state}, not enabled: pm2 does not start at boot")
    if settings.get("User") and settings["User"] != user:
        problems.append(f"{path} runs pm2 as {settings['User']}, not {user}")
    if path:
        # without Environment=PM2_HOME pm2 uses ~/.pm2 of the unit's user
        resurrects = settings.get("PM2_HOME") or _default_home(settings.get("User") or "root")
        if os.path.normpath(resurrects) != os.path.normpath(pm2_home):
            problems.append(f"{path} resurrects PM2_HOME {resurrects}, not {pm2_home}")
    return {
        "unit": unit,
        "path": path,
        "state": state,
        "enabled": state == "enabled",
        "unit_user": settings.get("User"),
        "unit_pm2_home": settings.get("PM2_HOME"),
        "problems": problems,
        "ok": not problems,
    }


def plan(name, user="root", pm2_home="/root/.pm2", pm2_bin="", root="/"):
    """
    What :func:`startup` and :func:`save` would do for app ``name``; read-only. Returns
    ``{"boot": status(), "startup": bool (the unit is missing, disabled or for another
    user/PM2_HOME), "backend": its pm2 status or None (not running), "in_dump": bool, "save":
    bool (online but not in dump.pm2), "also_saved" / "also_dropped": the other apps ``pm2 save``
    would add to / drop from the dump (it stores the whole running list)}``.

    CLI Example:

    .. code-block:: bash

        salt '*' pm2_startup.plan intranet-backend
    """
    boot = status(user, pm2_home, root)
    procs = [p for p in __salt__["pm2.list"](user, pm2_home, pm2_bin) if p.get("source") == "jlist"]
    live = [p for p in procs if p.get("name") == name]
    backend = live[0].get("status") if live else None
    saved = set(__salt__["pm2.saved_names"](user, pm2_home))
    running = {p.get("name") for p in procs}
    return {
        "boot": boot,
        "startup": not boot["ok"],
        "backend": backend,
        "in_dump": name in saved,
        "save": backend == "online" and name not in saved,
        # pm2 save stores the whole running list: what it also changes for other apps
        "also_saved": sorted(running - saved - {name}),
        "also_dropped": sorted(saved - running - {name}),
    }


def startup(user="root", pm2_home="/root/.pm2", pm2_bin=""):
    """
    ``pm2 startup systemd -u <user> --hp <home>`` as root: pm2 writes
    ``/etc/systemd/system/pm2-<user>.service`` (``pm2 resurrect`` with ``PM2_HOME=pm2_home``)
    and enables it. Returns True; raises ``CommandExecutionError`` when pm2 fails.

    CLI Example:

    .. code-block:: bash

        salt '*' pm2_startup.startup deploy /home/deploy/.pm2
    """
    home = home_for(pm2_home)
    if os.geteuid() != 0:
        raise CommandExecutionError("pm2 startup writes a systemd unit: it must run as root")
    pm2_bin = __salt__["pm2.find_bin"](pm2_bin, user)
    # the unit's PATH is this PATH plus node's directory: keep it clean and explicit
    env = {
        "HOME": "/root",
        "PATH": f"{os.path.dirname(pm2_bin)}:{SANE_PATH}",
        "PM2_HOME": pm2_home,
    }
    argv = ["env", "-i"] + [f"{k}={v}" for k, v in env.items()]
    argv += [pm2_bin, "startup", "systemd", "-u", user, "--hp", home]
    ret = __salt__["cmd.run_all"](
        argv, python_shell=False, cwd="/", ignore_retcode=True, output_loglevel="quiet", timeout=120
    )
    if ret["retcode"] != 0:
        output = (ret["stderr"] or ret["stdout"] or "no output").strip()[-500:]
        raise CommandExecutionError(f"pm2 startup systemd -u {user} failed: {output}")
    return True


def save(user="root", pm2_home="/root/.pm2", pm2_bin="", backup_keep=5):
    """
    ``pm2 save`` as ``user``, after a serverfix backup of ``dump.pm2`` (mode 0600, the newest
    ``backup_keep`` kept): what runs now becomes what ``pm2 resurrect`` starts at boot.

    CLI Example:

    .. code-block:: bash

        salt '*' pm2_startup.save deploy /home/deploy/.pm2
    """
    dump = os.path.join(pm2_home, "dump.pm2")
    if os.path.exists(dump):
        try:
            __utils__["serverfix_files.backup"](dump, keep=int(backup_keep))
        except OSError as exc:
            raise CommandExecutionError(f"cannot back up {dump}: {exc.strerror or exc}") from exc
    return __salt__["pm2.save"](user, pm2_home, pm2_bin)
