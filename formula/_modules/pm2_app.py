"""
pm2_app: restart a pm2 app and prove it came up; roll its ``.env`` back when it did not.

The work behind the ``pm2.restarted_ready`` state (Phase 5), callable on its own: why a
restart is pending (:func:`restart_reasons`, :func:`redis_started`), restart and wait for the
ready lines in log bytes written after the restart (:func:`restart_and_wait`), and the
rollback to the ``.env`` the app ran with (:func:`previous_env`, :func:`rollback_env`,
:func:`rollback`). pm2 itself is driven through the ``pm2`` module (as the owning user, never
starting a daemon); files are written through ``_utils/serverfix_files.py``. Everything comes
in as arguments (no pillar); secrets are passed in as values and only ever leave masked.
Standard library and salt only.
"""

import logging
import os
import re
import time
from typing import TYPE_CHECKING, Any

from salt.exceptions import CommandExecutionError

if TYPE_CHECKING:
    __salt__: dict[str, Any]
    __utils__: dict[str, Any]

log = logging.getLogger(__name__)

__virtualname__ = "pm2_app"

# pm2 says "online" right after a restart even when the app dies a moment later
STABLE_SECONDS = 1.0
POLL_SECONDS = 0.4
REPORT_LINES = 20
# after our restart, any of these means the app exited ("waiting restart": it crashed and
# pm2 waits out --restart-delay; "one-launch-status": it exited and autorestart is off)
DOWN_STATUSES = ("errored", "stopped", "stopping", "waiting restart", "one-launch-status")
# where the dotenv module puts the .env's backups (its path mirrored below it)
BACKUP_DIR = "/var/backups/serverfix"


def __virtual__():
    if "pm2.list" in __salt__:
        return __virtualname__
    return (False, "the pm2 execution module (_modules/pm2.py) is not loaded")


def _when(epoch):
    return __utils__["serverfix_pm2.when"](epoch)


def _procs(name, user, pm2_home, pm2_bin, refresh=False):
    return [
        p
        for p in __salt__["pm2.list"](user, pm2_home, pm2_bin, refresh=refresh)
        if p["name"] == name
    ]


# ---------------------------------------------------------------- is a restart pending?


def redis_started(host="127.0.0.1", port=6379, password=None):
    """
    When Redis at ``host``:``port`` started (epoch seconds, from ``INFO server``), or ``None``
    when it cannot be asked. The password is sent inside the socket (``redis_server.command``).

    CLI Example:

    .. code-block:: bash

        salt '*' pm2_app.redis_started 127.0.0.1 6379
    """
    if not host or "redis_server.command" not in __salt__:
        return None
    try:
        info = __salt__["redis_server.command"](
            "INFO", "server", host=host, port=port, password=password or None
        )
    except (OSError, ConnectionError, ValueError, CommandExecutionError):
        return None
    match = re.search(r"^uptime_in_seconds:(\d+)", info if isinstance(info, str) else "", re.M)
    return time.time() - int(match.group(1)) if match else None


def restart_reasons(
    name,
    env_file="",
    redis_host="",
    redis_port=6379,
    redis_password=None,
    user="root",
    pm2_home="/root/.pm2",
    pm2_bin="",
):
    """
    Why app ``name`` needs a restart, read from the host (empty list: it does not): ``env_file``
    changed after the app started, Redis at ``redis_host`` started after it ('' skips that
    check), or it is not online. Decided without any state file, so a pending restart stays
    pending from run to run. Uses the cached process list (no extra ``pm2 jlist``).

    CLI Example:

    .. code-block:: bash

        salt '*' pm2_app.restart_reasons intranet-backend env_file=/srv/backend/.env
    """
    procs = _procs(name, user, pm2_home, pm2_bin)
    if not procs:
        return []
    started = min(p["pm_uptime"] for p in procs) / 1000.0
    reasons = []
    try:
        changed = os.stat(env_file).st_mtime if env_file else None
    except OSError:
        changed = None
    if changed is not None and changed > started:
        reasons.append(
            f"{env_file} changed at {_when(changed)}, after the app started ({_when(started)})"
        )
    redis_start = redis_started(redis_host, redis_port, redis_password)
    # INFO gives whole seconds: a Redis started in the same second as the app does not count
    if redis_start is not None and redis_start > started + 1:
        reasons.append(f"Redis started at {_when(redis_start)}, after the app ({_when(started)})")
    down = sorted({p["status"] for p in procs if p["status"] != "online"})
    if down:
        reasons.append(f"the app is {', '.join(down)}, not online")
    return reasons


# ---------------------------------------------------------------- restart and wait


class _LogWatch:
    """The bytes an app writes to its log files from now on (old lines never count)."""

    def __init__(self, paths):
        self.offsets = {p: _size(p) for p in paths}
        self.new = {p: b"" for p in paths}

    def read(self):
        """Everything written to the log files since this watch began, as text."""
        for path, offset in self.offsets.items():
            size = _size(path)
            if size < offset:  # rotated or truncated: it is all new
                offset = 0
            if size > offset:
                with open(path, "rb") as handle:
                    handle.seek(offset)
                    self.new[path] += handle.read(size - offset)
                offset = size
            self.offsets[path] = offset
        return "\n".join(data.decode("utf-8", "replace") for data in self.new.values())


def _size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _env_values(env_file, secret_keys=()):
    """The values of the .env (read by the dotenv module when loaded) that must not be shown
    (every one but the formula's non-secret keys: ``serverfix_mask.hidden_values``), to mask;
    memory only."""
    if not env_file or "dotenv.read" not in __salt__ or not os.path.exists(env_file):
        return set()
    try:
        values = __salt__["dotenv.read"](env_file)
    except (CommandExecutionError, OSError, ValueError):
        return set()
    return __utils__["serverfix_mask.hidden_values"](values, None, secret_keys)


def _masked_tail(text, secrets, env_file, secret_keys, user, pm2_home):
    lines = [line for line in text.splitlines() if line.strip()][-REPORT_LINES:]
    found = set(secrets or ()) | _env_values(env_file, secret_keys)
    return __salt__["pm2.mask"]("\n".join(lines), list(found), user, pm2_home)


def _failure(procs, before):
    if not procs:
        return "it left pm2's list"
    down = any(p["status"] in DOWN_STATUSES for p in procs)
    status = "it is " + ", ".join(sorted({p["status"] for p in procs}))
    # pm2 restarted it more than our one restart: it crashed, whatever status pm2 shows now
    if any(p["restart_time"] > before.get(p["pm_id"], p["restart_time"]) + 1 for p in procs):
        return "it crashed after the restart (pm2 restarted it again)" + (
            f"; {status}" if down else ""
        )
    return status if down else ""


def restart_and_wait(
    name,
    ready_patterns=(),
    timeout=60,
    stop_first=False,
    secrets=(),
    env_file="",
    secret_keys=(),
    user="root",
    pm2_home="/root/.pm2",
    pm2_bin="",
):
    """
    Restart app ``name`` (``pm2 restart --update-env``) and wait until every instance is online
    with the same pid for more than a second and every ``ready_patterns`` line appeared in log
    bytes written after the restart, within ``timeout`` seconds. A crash after the restart
    (restart count grows, or errored/stopped) fails at once. ``stop_first`` stops the app
    before (it freezes a crash loop, so the restart count is not a moving target).

    Returns ``{"ok", "why", "seconds", "status", "pids", "missing", "log"}``: ``log`` is the
    last lines written after the restart with secrets masked (``secrets``, every value of
    ``env_file`` but the formula's non-secret keys not in ``secret_keys``, the app's secret env
    values, URL passwords: ``_utils/serverfix_mask.py``).

    CLI Example:

    .. code-block:: bash

        salt '*' pm2_app.restart_and_wait intranet-backend '["Workers gestartet"]' timeout=30
    """
    patterns, timeout = list(ready_patterns or ()), int(timeout)
    if stop_first:
        __salt__["pm2.stop"](name, user, pm2_home, pm2_bin)
    before = {p["pm_id"]: p["restart_time"] for p in _procs(name, user, pm2_home, pm2_bin)}
    watch = _LogWatch(__salt__["pm2.log_paths"](name, user, pm2_home, pm2_bin))
    __salt__["pm2.restart"](name, user, pm2_home, pm2_bin)
    began = time.monotonic()
    stable_pids, stable_since = None, None
    while True:
        text = watch.read()
        missing = [p for p in patterns if p not in text]
        procs = _procs(name, user, pm2_home, pm2_bin, refresh=True)
        now = time.monotonic()
        status = (
            ", ".join(
                f"{p['status']} (pid {p['pid']}, restarts {p['restart_time']})" for p in procs
            )
            or "not in pm2's list"
        )
        outcome = {
            "seconds": round(now - began, 1),
            "missing": missing,
            "status": status,
            "pids": sorted(p["pid"] for p in procs),
        }
        why = _failure(procs, before)
        if not why:
            pids = tuple(outcome["pids"])
            if all(p["status"] == "online" and p["pid"] for p in procs):
                if pids != stable_pids:
                    stable_pids, stable_since = pids, now
                elif now - stable_since > STABLE_SECONDS and not missing:
                    return dict(outcome, ok=True, why="", log="")
            else:
                stable_pids = None
            if now - began < timeout:
                time.sleep(POLL_SECONDS)
                continue
            why = (
                f"ready lines not seen within {timeout}s: {', '.join(missing)}"
                if missing
                else f"not online with a stable pid within {timeout}s"
            )
        else:
            time.sleep(POLL_SECONDS)  # pm2 writes the log lines of the crash a moment later
        tail = _masked_tail(watch.read(), secrets, env_file, secret_keys, user, pm2_home)
        return dict(outcome, ok=False, why=why, log=tail)


# ---------------------------------------------------------------- rollback


def previous_env(env_file, since, backup_dir=BACKUP_DIR):
    """
    The serverfix backup of ``env_file`` the app ran with before this change, or ``None``: the
    oldest backup made after the app's last start (``since``, epoch seconds) that differs from
    the current file (the dotenv state backs the file up before each change: the backup from
    this run, or from a run without restart consent). Backups below ``backup_dir`` (the file's
    path mirrored) and those earlier versions left next to the file count alike, by time.
    Read-only.

    CLI Example:

    .. code-block:: bash

        salt '*' pm2_app.previous_env /srv/backend/.env 1796000000
    """
    try:
        with open(env_file, "rb") as handle:
            current = handle.read()
        found = __utils__["serverfix_files.list_backups"](env_file, backup_dir=backup_dir)
        for path in found:
            if os.stat(path).st_mtime >= float(since):
                with open(path, "rb") as handle:
                    if handle.read() != current:
                        return path
    except OSError as exc:
        raise CommandExecutionError(
            f"cannot read {exc.filename or env_file}: {exc.strerror}"
        ) from exc
    return None


def rollback_env(env_file, since, backup_keep=5, backup_dir=BACKUP_DIR):
    """
    Put ``env_file`` back to the version the app ran with (:func:`previous_env`); the failing
    one is kept first as ``<file>.failed-<time>.bak`` below ``backup_dir`` (its own tag: a
    later rollback never takes it for "the .env the app ran with"). Returns
    ``{"env_restored_from": path, "failed_env_saved_as": path}``, or
    ``{"env_restored_from": None}`` when there is no backup newer than ``since`` (then nothing
    is written).

    CLI Example:

    .. code-block:: bash

        salt '*' pm2_app.rollback_env /srv/backend/.env 1796000000
    """
    __utils__["serverfix_files.check_backup_dir"](backup_dir)
    source = previous_env(env_file, since, backup_dir) if env_file else None
    if not source:
        return {"env_restored_from": None}
    try:
        with open(source, "rb") as handle:
            previous = handle.read()
        failed_copy = __utils__["serverfix_files.backup"](
            env_file, keep=int(backup_keep), tag="failed", backup_dir=backup_dir
        )
        __utils__["serverfix_files.atomic_write"](env_file, previous)
    except OSError as exc:
        raise CommandExecutionError(
            f"rollback of {env_file} failed: {exc.filename}: {exc.strerror}"
        ) from exc
    return {"env_restored_from": source, "failed_env_saved_as": failed_copy}


def rollback(
    name,
    env_file,
    since,
    timeout=60,
    backup_keep=5,
    user="root",
    pm2_home="/root/.pm2",
    pm2_bin="",
    backup_dir=BACKUP_DIR,
):
    """
    After a failed restart of app ``name``: :func:`rollback_env` (the backups below
    ``backup_dir``, default ``/var/backups/serverfix``, and those next to the file from
    earlier versions), then stop and restart the app
    and wait until it is online with a stable pid (no ready lines: the previous ``.env`` may not
    enable what they announce). Returns ``{"recovered": bool, "env_restored_from",
    "failed_env_saved_as", "seconds_to_recover", "status", "why"}``; with no backup to restore,
    ``{"recovered": False, "env_restored_from": None}`` and the app is not restarted again.

    CLI Example:

    .. code-block:: bash

        salt '*' pm2_app.rollback intranet-backend /srv/backend/.env 1796000000
    """
    began = time.monotonic()
    restored = rollback_env(env_file, since, backup_keep, backup_dir)
    if not restored["env_restored_from"]:
        return {"recovered": False, "env_restored_from": None}
    outcome = restart_and_wait(
        name, (), timeout, stop_first=True, user=user, pm2_home=pm2_home, pm2_bin=pm2_bin
    )
    return dict(
        restored,
        recovered=outcome["ok"],
        status=outcome["status"],
        why=outcome["why"],
        seconds_to_recover=round(time.monotonic() - began, 1),
    )
