"""
pm2 states: an app removed for good (Phase 3) and the guarded backend restart (Phase 5).

Thin over the ``pm2`` execution module, which runs pm2 as the owning user, never starts a
daemon and keeps environment values out of everything it returns.

``pm2.restarted_ready`` restarts only with the operator's consent (``allowed``) and only
when a restart is pending. "Pending" is decided without any state file, so it survives
between runs (first apply without consent, later with it): the ``.env`` changed after the
app started, Redis started after the app, the app is not online, Phase 1/2 changed
something in this run (``watch`` -> ``mod_watch``), or ``force``.
"""

import datetime
import inspect
import logging
import os
import re
import time

import salt.utils.data
from salt.exceptions import CommandExecutionError

log = logging.getLogger(__name__)

__virtualname__ = "pm2"

ALLOW_HINT = "pillar='{\"serverfix\": {\"backend\": {\"restart\": true}}}'"
STABLE_SECONDS = 1.0  # pm2 says "online" right after a restart even when the app dies a moment later
POLL_SECONDS = 0.4
REPORT_LINES = 20
# after our restart, any of these means the app exited ("waiting restart": it crashed and
# pm2 waits out --restart-delay; "one-launch-status": it exited and autorestart is off)
DOWN_STATUSES = ("errored", "stopped", "stopping", "waiting restart", "one-launch-status")


def __virtual__():
    if "pm2.list" in __salt__:  # pylint: disable=undefined-variable
        return __virtualname__
    return (False, "the pm2 execution module (_modules/pm2.py) is not loaded")


def _ret(name):
    return {"name": name, "result": True, "changes": {}, "comment": ""}


def _when(epoch):
    return datetime.datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def _log_calls():
    # the cost the runbook cares about: a no-op run of Phases 3 + 5 is one `pm2 jlist`
    made = __salt__["pm2.calls"]()  # pylint: disable=undefined-variable
    log.info("pm2: %d CLI call(s) so far in this run: %s", made["total"], " ".join(made["commands"]) or "-")


def _where(user, pm2_home):
    return f"pm2 of {user} ({pm2_home})"


# ---------------------------------------------------------------- Phase 3: absent


def absent(name, user="root", pm2_home="/root/.pm2", pm2_bin="", backup_keep=5):
    """
    App ``name`` is not managed by pm2 and not in its saved list (``dump.pm2``), so it stays
    gone after a reboot or ``pm2 resurrect``: ``pm2 stop`` + ``pm2 delete`` + ``pm2 save``.

    ``pm2 save`` rewrites the saved list from the running one; when that would also drop or
    add other apps (the two lists differ), or when no daemon runs, only ``name`` is removed
    from ``dump.pm2`` (after a backup). Already absent: no change and no mutating call.

    name
        The pm2 app name (not ``all``, an id or a namespace).
    user / pm2_home
        The user whose pm2 manages the app and its PM2_HOME.
    pm2_bin
        Path of pm2; '' finds it (pillar ``serverfix:pm2:bin``, then the usual places).
    """
    ret = _ret(name)
    try:
        problem = __salt__["pm2.name_problem"](name, user, pm2_home, pm2_bin)  # pylint: disable=undefined-variable
        if problem:
            ret.update(result=False, comment=f"Refusing pm2 name: {problem}; list the app's own name in "
                                             "serverfix:remove_processes")
            return ret
        procs = __salt__["pm2.list"](user, pm2_home, pm2_bin)  # pylint: disable=undefined-variable
        running = [p for p in procs if p["source"] == "jlist"]
        live = [p for p in running if p["name"] == name]
        saved = __salt__["pm2.saved_names"](user, pm2_home)  # pylint: disable=undefined-variable
        in_dump = name in saved
        if not live and not in_dump:
            ret["comment"] = (f"{name} is already absent from the {_where(user, pm2_home)}: neither running nor "
                              "in its saved list (dump.pm2)")
            return ret
        if live:
            ret["changes"]["process"] = {"old": ", ".join(p["status"] for p in live), "new": "deleted"}
        if in_dump:
            ret["changes"]["dump.pm2"] = {"old": f"{name} saved (comes back on reboot/resurrect)", "new": "removed"}
        if __opts__["test"]:  # pylint: disable=undefined-variable
            steps = ["stop and delete it"] if live else []
            steps += ["remove it from dump.pm2"] if in_dump else []
            ret.update(result=None, comment=f"{name} would be removed from the {_where(user, pm2_home)}: "
                                            f"{' and '.join(steps)}")
            return ret
        done = []
        if live:
            if any(p["status"] not in ("stopped", "errored") for p in live):
                __salt__["pm2.stop"](name, user, pm2_home, pm2_bin)  # pylint: disable=undefined-variable
                done.append("stopped")
            __salt__["pm2.delete"](name, user, pm2_home, pm2_bin)  # pylint: disable=undefined-variable
            done.append("deleted")
        if in_dump:
            others_running = {p["name"] for p in running} - {name}
            if live and others_running == set(saved) - {name}:
                # the saved list becomes exactly the old one without `name`; --force saves an empty list
                __salt__["pm2.save"](user, pm2_home, pm2_bin, force=not others_running)  # pylint: disable=undefined-variable
                done.append("saved (pm2 save)")
            else:
                __salt__["pm2.unsave"](name, user, pm2_home, backup_keep)  # pylint: disable=undefined-variable
                done.append("removed from dump.pm2 only (pm2 save would have changed other apps' saved state)"
                            if live else "removed from dump.pm2 (no pm2 daemon needed)")
        if name in __salt__["pm2.saved_names"](user, pm2_home):  # pylint: disable=undefined-variable
            ret.update(result=False, comment=f"{name} is still in {pm2_home}/dump.pm2 after: {', '.join(done)}")
            return ret
        ret["comment"] = (f"{name} {', '.join(done)} in the {_where(user, pm2_home)}; "
                          "it stays gone after a reboot or pm2 resurrect")
    except CommandExecutionError as exc:
        ret.update(result=False, comment=str(exc))
    finally:
        _log_calls()
    return ret


# ---------------------------------------------------------------- Phase 5: restart with readiness


def _redis_started(host, port):
    """Epoch when Redis started (from ``INFO server``), or None when it cannot be asked."""
    if not host or "redis_server.command" not in __salt__:  # pylint: disable=undefined-variable
        return None
    # __pillar__, not pillar.get: Salt 3008's pillar.get hands modules masked values
    password = salt.utils.data.traverse_dict_and_list(
        __pillar__, "serverfix:redis:password", "") or None  # pylint: disable=undefined-variable
    try:
        info = __salt__["redis_server.command"]("INFO", "server", host=host, port=port,  # pylint: disable=undefined-variable
                                                password=password)
    except (CommandExecutionError, OSError, ValueError):  # redis_server.command raises CommandExecutionError
        return None
    match = re.search(r"^uptime_in_seconds:(\d+)", info if isinstance(info, str) else "", re.M)
    return time.time() - int(match.group(1)) if match else None


def _pending_reasons(procs, force, upstream_changed, env_file, redis_host, redis_port):
    started = min(p["pm_uptime"] for p in procs) / 1000.0
    reasons = []
    if force:
        reasons.append("forced (serverfix:backend:force_restart)")
    if upstream_changed:
        reasons.append("Phase 1/2 changed something in this run")
    try:
        changed = os.stat(env_file).st_mtime if env_file else None
    except OSError:
        changed = None
    if changed is not None and changed > started:
        reasons.append(f"{env_file} changed at {_when(changed)}, after the app started ({_when(started)})")
    redis_started = _redis_started(redis_host, redis_port)
    # INFO gives whole seconds: a Redis started in the same second as the app does not count
    if redis_started is not None and redis_started > started + 1:
        reasons.append(f"Redis started at {_when(redis_started)}, after the app ({_when(started)})")
    down = sorted({p["status"] for p in procs if p["status"] != "online"})
    if down:
        reasons.append(f"the app is {', '.join(down)}, not online")
    return reasons


def _env_secrets(env_file, secret_keys=()):
    """Values of the .env (read by the dotenv module when loaded) to mask in reported log lines."""
    if not env_file or "dotenv.read" not in __salt__ or not os.path.exists(env_file):  # pylint: disable=undefined-variable
        return set()
    try:
        values = __salt__["dotenv.read"](env_file)  # pylint: disable=undefined-variable
    except (CommandExecutionError, OSError, ValueError):
        return set()
    return {str(v) for k, v in values.items()
            if __salt__["dotenv.is_secret"](k, secret_keys=secret_keys)}  # pylint: disable=undefined-variable


class _LogWatch:
    """The bytes an app writes to its log files from now on (old lines never count)."""

    def __init__(self, paths):
        self.offsets = {p: _size(p) for p in paths}
        self.new = {p: b"" for p in paths}

    def read(self):
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


def _restart_and_wait(name, user, pm2_home, pm2_bin, patterns, timeout, stop_first=False):
    """
    Restart ``name`` and wait until every instance is online with the same pid for more than a
    second and every pattern appeared in log bytes written after the restart. A crash after
    the restart (restart count grows, or errored/stopped) fails at once.
    """
    if stop_first:  # freezes a crash loop, so the restart count below is not a moving target
        __salt__["pm2.stop"](name, user, pm2_home, pm2_bin)  # pylint: disable=undefined-variable
    before = {p["pm_id"]: p["restart_time"] for p in __salt__["pm2.list"](user, pm2_home, pm2_bin)  # pylint: disable=undefined-variable
              if p["name"] == name}
    watch = _LogWatch(__salt__["pm2.log_paths"](name, user, pm2_home, pm2_bin))  # pylint: disable=undefined-variable
    __salt__["pm2.restart"](name, user, pm2_home, pm2_bin)  # pylint: disable=undefined-variable
    began = time.monotonic()
    stable_pids, stable_since = None, None
    while True:
        text = watch.read()
        missing = [p for p in patterns if p not in text]
        procs = [p for p in __salt__["pm2.list"](user, pm2_home, pm2_bin, refresh=True)  # pylint: disable=undefined-variable
                 if p["name"] == name]
        now = time.monotonic()
        outcome = {"seconds": round(now - began, 1), "text": text, "missing": missing,
                   "status": ", ".join(f"{p['status']} (pid {p['pid']}, restarts {p['restart_time']})"
                                       for p in procs) or "not in pm2's list",
                   "pids": sorted(p["pid"] for p in procs)}
        failed = ""
        if not procs:
            failed = "it left pm2's list"
        elif any(p["status"] in DOWN_STATUSES for p in procs):
            failed = "it is " + ", ".join(sorted({p["status"] for p in procs}))
        elif any(p["restart_time"] > before.get(p["pm_id"], p["restart_time"]) + 1 for p in procs):
            failed = "it crashed after the restart (pm2 restarted it again)"
        if failed:
            time.sleep(POLL_SECONDS)  # pm2 writes the log lines of the crash a moment later
            return dict(outcome, ok=False, why=failed, text=watch.read())
        pids = tuple(outcome["pids"])
        if all(p["status"] == "online" and p["pid"] for p in procs):
            if pids != stable_pids:
                stable_pids, stable_since = pids, now
            elif now - stable_since > STABLE_SECONDS and not missing:
                return dict(outcome, ok=True, why="")
        else:
            stable_pids = None
        if now - began >= timeout:
            why = (f"ready lines not seen within {timeout}s: {', '.join(missing)}" if missing
                   else f"not online with a stable pid within {timeout}s")
            return dict(outcome, ok=False, why=why, text=watch.read())
        time.sleep(POLL_SECONDS)


def _rollback_backup(env_file, since):
    """
    The .env the app was running with before this change: the oldest serverfix backup made
    after the app's last start that differs from the current file (the dotenv state backs the
    file up before each change: the backup from this run, or from a run without restart consent).
    """
    with open(env_file, "rb") as handle:
        current = handle.read()
    for path in __utils__["serverfix_files.list_backups"](env_file):  # pylint: disable=undefined-variable
        if os.stat(path).st_mtime >= since:
            with open(path, "rb") as handle:
                if handle.read() != current:
                    return path
    return None


def _rollback(name, env_file, since, user, pm2_home, pm2_bin, timeout, backup_keep, detected):
    source = _rollback_backup(env_file, since) if env_file else None
    if not source:
        return {"recovered": False}, (f"Rollback: no serverfix backup of {env_file or 'the .env'} newer than the "
                                      f"app's start ({_when(since)}): nothing to restore, not restarted again")
    with open(source, "rb") as handle:
        previous = handle.read()
    # kept under its own tag: never taken for "the .env the app ran with" by a later rollback
    failed_copy = __utils__["serverfix_files.backup"](env_file, keep=backup_keep, tag="failed")  # pylint: disable=undefined-variable
    __utils__["serverfix_files.atomic_write"](env_file, previous)  # pylint: disable=undefined-variable
    # the previous .env may not enable what the ready lines announce: online and stable is the bar
    outcome = _restart_and_wait(name, user, pm2_home, pm2_bin, (), timeout, stop_first=True)
    seconds = round(time.monotonic() - detected, 1)
    report = {"env_restored_from": source, "failed_env_saved_as": failed_copy,
              "recovered": outcome["ok"], "seconds_to_recover": seconds}
    if outcome["ok"]:
        comment = (f"Rollback: {env_file} restored from {source} (the failing one kept as {failed_copy}); {name} "
                   f"restarted and is back: {outcome['status']}, {seconds}s after the failure was detected")
    else:
        comment = (f"Rollback FAILED: {env_file} restored from {source} (the failing one kept as {failed_copy}) "
                   f"and {name} restarted, but {outcome['why']}; status: {outcome['status']}")
    return report, comment


def _tail_lines(text, secrets, user, pm2_home):
    lines = [line for line in text.splitlines() if line.strip()][-REPORT_LINES:]
    return __salt__["pm2.mask"]("\n".join(lines), list(secrets), user, pm2_home)  # pylint: disable=undefined-variable


def restarted_ready(name, user="root", pm2_home="/root/.pm2", pm2_bin="", allowed=False, force=False,
                    ready_patterns=(), ready_timeout=60, rollback=True, env_file="", shadowed_env="fail",
                    managed_keys=(), redis_host="", redis_port=6379, backup_keep=5, upstream_changed=False,
                    secret_keys=(), changes_from=()):
    """
    Restart app ``name`` when a restart is pending and the operator allowed it, then wait
    until it is really up: online, the same pid for more than a second, and every
    ``ready_patterns`` line in log output written after the restart, within ``ready_timeout``
    seconds. On failure: the new log lines (secrets masked) and the status; with ``rollback``
    the ``.env`` goes back to the version the app ran with and the app is restarted again.

    allowed
        The operator's consent (pillar ``serverfix:backend:restart``). Without it nothing is
        restarted; a pending restart is reported (result True) with how to allow it.
    force
        Restart even when nothing is pending.
    env_file
        The app's ``.env``: changed after the app started means a restart is pending; the
        rollback restores it from the serverfix backup.
    shadowed_env / managed_keys
        ``fail`` or ``warn`` when any of ``managed_keys`` is in pm2's saved start-time
        environment of the app: dotenv never overrides those, so the new ``.env`` value would
        not take effect.
    redis_host / redis_port
        Redis started after the app means a restart is pending ('' to skip the check).
    upstream_changed
        Set by ``mod_watch`` when a watched state (Phase 1/2) changed something.
    changes_from
        SLS names (Phase 1/2): a state of theirs that changed something earlier in this run (in
        test mode: will change) makes the restart pending, like ``watch``. Unlike ``watch`` this
        also works over salt-ssh, whose master-side compile turns ``watch`` on a custom state
        into ``require`` (and loads every module looking for its ``mod_watch``).
    secret_keys
        More ``.env`` keys whose values are masked in reported log lines (``serverfix:dotenv:secret_keys``).
    """
    ret = _ret(name)
    try:
        problem = __salt__["pm2.name_problem"](name, user, pm2_home, pm2_bin)  # pylint: disable=undefined-variable
        if problem:
            ret.update(result=False, comment=f"Refusing pm2 name: {problem}; set serverfix:backend:name to the app's name")
            return ret
        procs = [p for p in __salt__["pm2.list"](user, pm2_home, pm2_bin) if p["name"] == name]  # pylint: disable=undefined-variable
        if not procs:
            ret.update(result=not allowed,
                       comment=f"{name} is not managed by the {_where(user, pm2_home)}: nothing to restart "
                               f"(start it as {user} first, then pm2 save)")
            return ret
        upstream_changed = upstream_changed or __utils__["serverfix_run.changed_earlier"](  # pylint: disable=undefined-variable
            globals().get("__running__"), sls=changes_from)
        reasons = _pending_reasons(procs, force, upstream_changed, env_file, redis_host, redis_port)
        if not reasons:
            ret["comment"] = (f"{name} is online and up to date (started "
                              f"{_when(min(p['pm_uptime'] for p in procs) / 1000)}, after the last .env change and "
                              "Redis start): no restart needed")
            return ret
        shadowed = sorted(set(managed_keys) & {k for p in procs for k in p["env_keys"]})
        shadow_note = ""
        if shadowed:
            shadow_note = (f"pm2's saved start-time environment of {name} sets {', '.join(shadowed)}: dotenv never "
                           "overrides a variable that is already set, so the .env values of these keys would not take "
                           f"effect on restart. Fix: as {user}, pm2 delete {name}, start it again from a shell without "
                           "these variables and pm2 save; or set serverfix:backend:shadowed_env to warn.")
            ret["warnings"] = [shadow_note]
        if not allowed:
            ret["comment"] = (f"RESTART PENDING: {name} needs a restart ({'; '.join(reasons)}). Nothing was restarted: "
                              f"the runbook restarts the backend only with the operator's consent. Allow it with "
                              f"{ALLOW_HINT}" + (f". Note: {shadow_note}" if shadow_note else ""))
            ret.setdefault("warnings", []).insert(0, f"RESTART PENDING: {name}; allow with {ALLOW_HINT}")
            return ret
        if procs[0]["source"] != "jlist":
            ret.update(result=False, comment=f"{name} needs a restart ({'; '.join(reasons)}) but no pm2 daemon runs "
                                             f"for {user} in {pm2_home}, and serverfix never starts one: start the "
                                             f"apps as {user} (PM2_HOME={pm2_home} pm2 resurrect) and apply again")
            return ret
        if shadowed and shadowed_env == "fail":
            ret.update(result=False, comment=f"Not restarting {name}: {shadow_note}")
            return ret
        ret["changes"] = {"restarted": name, "reasons": reasons}
        if __opts__["test"]:  # pylint: disable=undefined-variable
            ret.update(result=None, comment=f"{name} would be restarted ({'; '.join(reasons)}) and checked: online, "
                                            f"stable pid, ready lines within {ready_timeout}s")
            return ret
        since = min(p["pm_uptime"] for p in procs) / 1000.0
        outcome = _restart_and_wait(name, user, pm2_home, pm2_bin, list(ready_patterns), int(ready_timeout))
        ret["changes"]["pid"] = {"old": sorted(p["pid"] for p in procs), "new": outcome["pids"]}
        if outcome["ok"]:
            ret["comment"] = (f"{name} restarted ({'; '.join(reasons)}): {outcome['status']}, pid stable, ready "
                              f"after {outcome['seconds']}s" +
                              (f" (seen: {', '.join(ready_patterns)})" if ready_patterns else ""))
            return ret
        detected = time.monotonic()
        secrets = _env_secrets(env_file, secret_keys)
        ret["changes"]["ready"] = False
        comment = [f"{name} did NOT come up after the restart: {outcome['why']}. Status: {outcome['status']}.",
                   "New log lines (secrets masked):", _tail_lines(outcome["text"], secrets, user, pm2_home) or "(none)"]
        if rollback:
            ret["changes"]["rollback"], note = _rollback(name, env_file, since, user, pm2_home, pm2_bin,
                                                         int(ready_timeout), backup_keep, detected)
            comment.append(note)
        else:
            comment.append("Rollback is off (serverfix:backend:rollback): the app was left as it is")
        ret.update(result=False, comment="\n".join(comment))
    except CommandExecutionError as exc:
        ret.update(result=False, comment=str(exc))
    finally:
        _log_calls()
    return ret


def mod_watch(name, sfun=None, **kwargs):
    """
    A watched state changed something: for ``restarted_ready`` that alone makes a restart
    pending (still only with the operator's consent).
    """
    funcs = {"restarted_ready": restarted_ready, "absent": absent}
    if sfun not in funcs:
        return {"name": name, "result": False, "changes": {}, "comment": f"pm2.{sfun} does not support watch"}
    params = inspect.signature(funcs[sfun]).parameters
    args = {k: v for k, v in kwargs.items() if k in params and k != "name"}
    if sfun == "restarted_ready":
        args["upstream_changed"] = True
    return funcs[sfun](name, **args)
