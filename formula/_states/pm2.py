"""
pm2 states: an app removed for good (Phase 3) and the guarded backend restart (Phase 5).

The states decide (consent, test mode, whether a restart is pending, what to report); the work
is done by the ``pm2`` execution module (runs pm2 as the owning user, never starts a daemon,
keeps environment values out of everything it returns) and by ``pm2_app`` (restart and wait
for the ready lines, the ``.env`` rollback).

``pm2.restarted_ready`` restarts only with the operator's consent (``allowed``) and only
when a restart is pending. "Pending" is decided without any state file, so it survives
between runs (first apply without consent, later with it): the ``.env`` changed after the
app started, Redis started after the app, the app is not online, a state of the
``changes_from`` SLS files changed something earlier in this run, or ``force``.
"""

import inspect
import logging
from typing import TYPE_CHECKING, Any

from salt.exceptions import SaltException

if TYPE_CHECKING:
    __salt__: dict[str, Any]
    __utils__: dict[str, Any]
    __opts__: dict[str, Any]
    __pillar__: dict[str, Any]

log = logging.getLogger(__name__)

__virtualname__ = "pm2"

ALLOW_HINT = 'pillar=\'{"serverfix": {"backend": {"restart": true}}}\''
READY_DEFAULTS = {"patterns": [], "timeout": 60, "rollback": True}
ENV_DEFAULTS = {
    "file": "",
    "managed_keys": [],
    "secret_keys": [],
    "shadowed": "fail",
    "backup_keep": 5,
    "backup_dir": "/var/backups/serverfix",
}
REDIS_DEFAULTS = {"host": "", "port": 6379, "password": ""}


def __virtual__():
    if "pm2.list" in __salt__ and "pm2_app.restart_and_wait" in __salt__:
        return __virtualname__
    return (False, "the pm2 and pm2_app execution modules (_modules/pm2*.py) are not loaded")


def _ret(name):
    return {"name": name, "result": True, "changes": {}, "comment": ""}


def _when(epoch):
    return __utils__["serverfix_pm2.when"](epoch)


def _log_calls():
    # the cost the runbook cares about: a no-op run of Phases 3 + 5 is one list read (over the
    # daemon's socket: rpc:getMonitorData; `jlist` when the CLI had to do it)
    made = __salt__["pm2.calls"]()
    log.info(
        "pm2: %d call(s) so far in this run: %s",
        made["total"],
        " ".join(made["commands"]) or "-",
    )


def _where(user, pm2_home):
    return f"pm2 of {user} ({pm2_home})"


def _name_problem(exc):
    return __utils__["serverfix_errors.problems"](exc)[0]


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
        Path of pm2; '' finds it in the usual places.
    backup_keep
        How many serverfix backups of ``dump.pm2`` to keep when it is edited directly.
    """
    ret = _ret(name)
    try:
        try:
            __salt__["pm2.check_name"](name, user, pm2_home, pm2_bin)
        except SaltException as exc:
            ret.update(
                result=False,
                comment=f"Refusing pm2 name: {_name_problem(exc)}; pass the app's own name",
            )
            return ret
        procs = __salt__["pm2.list"](user, pm2_home, pm2_bin)
        running = [p for p in procs if p["source"] == "jlist"]
        live = [p for p in running if p["name"] == name]
        saved = __salt__["pm2.saved_names"](user, pm2_home)
        in_dump = name in saved
        if not live and not in_dump:
            ret["comment"] = (
                f"{name} is already absent from the {_where(user, pm2_home)}: neither running nor "
                "in its saved list (dump.pm2)"
            )
            return ret
        if live:
            ret["changes"]["process"] = {
                "old": ", ".join(p["status"] for p in live),
                "new": "deleted",
            }
        if in_dump:
            ret["changes"]["dump.pm2"] = {
                "old": f"{name} saved (comes back on reboot/resurrect)",
                "new": "removed",
            }
        if __opts__["test"]:
            steps = ["stop and delete it"] if live else []
            steps += ["remove it from dump.pm2"] if in_dump else []
            ret.update(
                result=None,
                comment=f"{name} would be removed from the {_where(user, pm2_home)}: "
                f"{' and '.join(steps)}",
            )
            return ret
        done = []
        if live:
            if any(p["status"] not in ("stopped", "errored") for p in live):
                __salt__["pm2.stop"](name, user, pm2_home, pm2_bin)
                done.append("stopped")
            __salt__["pm2.delete"](name, user, pm2_home, pm2_bin)
            done.append("deleted")
        if in_dump:
            others_running = {p["name"] for p in running} - {name}
            if live and others_running == set(saved) - {name}:
                # the saved list becomes the old one without `name`; --force saves an empty list
                __salt__["pm2.save"](user, pm2_home, pm2_bin, force=not others_running)
                done.append("saved (pm2 save)")
            else:
                __salt__["pm2.unsave"](name, user, pm2_home, backup_keep)
                done.append(
                    "removed from dump.pm2 only "
                    "(pm2 save would have changed other apps' saved state)"
                    if live
                    else "removed from dump.pm2 (no pm2 daemon needed)"
                )
        if name in __salt__["pm2.saved_names"](user, pm2_home):
            ret.update(
                result=False,
                comment=f"{name} is still in {pm2_home}/dump.pm2 after: {', '.join(done)}",
            )
            return ret
        ret["comment"] = (
            f"{name} {', '.join(done)} in the {_where(user, pm2_home)}; "
            "it stays gone after a reboot or pm2 resurrect"
        )
    except SaltException as exc:
        ret.update(result=False, comment=__utils__["serverfix_errors.message"](exc))
    finally:
        _log_calls()
    return ret


# ---------------------------------------------------------------- Phase 5: restart with readiness


def _settings(group, given, defaults):
    unknown = sorted(set(given or {}) - set(defaults))
    if unknown:
        raise SaltException(
            f"{group}: unknown key(s) {', '.join(unknown)}; known: {', '.join(defaults)}"
        )
    return dict(defaults, **(given or {}))


def _shadow_note(name, user, shadowed):
    return (
        f"pm2's saved start-time environment of {name} sets {', '.join(shadowed)}: dotenv "
        "never overrides a variable that is already set, so the .env values of these keys "
        f"would not take effect on restart. Fix: as {user}, pm2 delete {name}, start it again "
        "from a shell without these variables and pm2 save; or pass env shadowed: warn."
    )


def restarted_ready(
    name,
    user="root",
    pm2_home="/root/.pm2",
    pm2_bin="",
    allowed=False,
    force=False,
    ready=None,
    env=None,
    redis=None,
    changes_from=(),
):
    """
    Restart app ``name`` when a restart is pending and the operator allowed it, then wait
    until it is really up: online, the same pid for more than a second, and every ready
    pattern in log output written after the restart, within the ready timeout. On failure:
    the new log lines (secrets masked) and the status; with ``rollback`` the ``.env`` goes back
    to the version the app ran with and the app is restarted again.

    allowed
        The operator's consent. Without it nothing is restarted; a pending restart is
        reported (result True) with how to allow it.
    force
        Restart even when nothing is pending.
    ready
        ``{"patterns": [...], "timeout": 60, "rollback": True}``: the log lines that prove the
        app is up, the seconds to wait for them, and whether a failed restart rolls back.
    env
        ``{"file": "", "managed_keys": [], "secret_keys": [], "shadowed": "fail",
        "backup_keep": 5, "backup_dir": "/var/backups/serverfix"}``: the app's ``.env``
        (changed after the app started means a restart is pending; the rollback restores it
        from the serverfix backup below ``backup_dir``, or one left next to the file), the keys
        this run manages (``shadowed``: ``fail`` or ``warn`` when pm2's saved start-time
        environment of the app sets one of them: dotenv never overrides those, so the new
        value would not take effect), more keys whose values are masked in reported log
        lines, and how many backups the rollback keeps.
    redis
        ``{"host": "", "port": 6379, "password": ""}``: Redis started after the app means a
        restart is pending ('' host skips the check). The password may be a
        ``{"pillar": "<key>"}`` reference, read when the state runs; it is also masked.
    changes_from
        SLS names: a state of theirs that changed something earlier in this run (in test mode:
        will change) makes the restart pending. Over salt-ssh this is the way: its master-side
        compile turns ``watch`` on a custom state into ``require`` (and loads every module
        looking for its ``mod_watch``).
    """
    return _restarted_ready(
        name,
        user,
        pm2_home,
        pm2_bin,
        allowed,
        force,
        ready,
        env,
        redis,
        changes_from,
        upstream_changed=False,
    )


def _restarted_ready(  # pylint: disable=too-many-statements  # one decision, read top down
    name, user, pm2_home, pm2_bin, allowed, force, ready, env, redis, changes_from, upstream_changed
):
    ret = _ret(name)
    pm2 = {"user": user, "pm2_home": pm2_home, "pm2_bin": pm2_bin}
    try:
        ready = _settings("ready", ready, READY_DEFAULTS)
        env = _settings("env", env, ENV_DEFAULTS)
        redis = _settings("redis", redis, REDIS_DEFAULTS)
        try:
            __salt__["pm2.check_name"](name, **pm2)
        except SaltException as exc:
            ret.update(
                result=False,
                comment=f"Refusing pm2 name: {_name_problem(exc)}; pass the app's name",
            )
            return ret
        procs = [p for p in __salt__["pm2.list"](**pm2) if p["name"] == name]
        if not procs:
            ret.update(
                result=not allowed,
                comment=f"{name} is not managed by the {_where(user, pm2_home)}: nothing to "
                f"restart (start it as {user} first, then pm2 save)",
            )
            return ret
        upstream_changed = upstream_changed or __utils__["serverfix_run.changed_earlier"](
            globals().get("__running__"), sls=changes_from
        )
        password = __utils__["serverfix_pillar.resolve"](redis["password"], __pillar__) or None
        reasons = (["forced (force)"] if force else []) + (
            ["Phase 1/2 changed something in this run"] if upstream_changed else []
        )
        reasons += __salt__["pm2_app.restart_reasons"](
            name, env["file"], redis["host"], redis["port"], password, **pm2
        )
        started = min(p["pm_uptime"] for p in procs) / 1000.0
        if not reasons:
            ret["comment"] = (
                f"{name} is online and up to date (started {_when(started)}, after "
                "the last .env change and Redis start): no restart needed"
            )
            return ret
        shadowed = sorted(set(env["managed_keys"]) & {k for p in procs for k in p["env_keys"]})
        shadow_note = _shadow_note(name, user, shadowed) if shadowed else ""
        if shadowed:
            ret["warnings"] = [shadow_note]
        if not allowed:
            ret["comment"] = (
                f"RESTART PENDING: {name} needs a restart ({'; '.join(reasons)}). "
                "Nothing was restarted: the runbook restarts the backend only with "
                f"the operator's consent. Allow it with {ALLOW_HINT}"
                + (f". Note: {shadow_note}" if shadow_note else "")
            )
            ret.setdefault("warnings", []).insert(
                0, f"RESTART PENDING: {name}; allow with {ALLOW_HINT}"
            )
            return ret
        if procs[0]["source"] != "jlist":
            ret.update(
                result=False,
                comment=(
                    f"{name} needs a restart ({'; '.join(reasons)}) "
                    f"but no pm2 daemon runs for {user} "
                    f"in {pm2_home}, and serverfix never starts one: start the apps as {user} "
                    f"(PM2_HOME={pm2_home} pm2 resurrect) and apply again"
                ),
            )
            return ret
        if shadowed and env["shadowed"] == "fail":
            ret.update(result=False, comment=f"Not restarting {name}: {shadow_note}")
            return ret
        ret["changes"] = {"restarted": name, "reasons": reasons}
        if __opts__["test"]:
            ret.update(
                result=None,
                comment=f"{name} would be restarted ({'; '.join(reasons)}) and "
                f"checked: online, stable pid, ready lines within "
                f"{ready['timeout']}s",
            )
            return ret
        outcome = __salt__["pm2_app.restart_and_wait"](
            name,
            list(ready["patterns"]),
            int(ready["timeout"]),
            secrets=[password],
            env_file=env["file"],
            secret_keys=list(env["secret_keys"]),
            **pm2,
        )
        ret["changes"]["pid"] = {"old": sorted(p["pid"] for p in procs), "new": outcome["pids"]}
        _outcome(ret, name, reasons, ready, env, started, outcome, pm2)
    except SaltException as exc:
        ret.update(result=False, comment=__utils__["serverfix_errors.message"](exc))
    finally:
        _log_calls()
    return ret


def _outcome(ret, name, reasons, ready, env, started, outcome, pm2):
    """Fill ``ret`` from what ``pm2_app.restart_and_wait`` returned; roll back on a failure."""
    if outcome["ok"]:
        seen = f" (seen: {', '.join(ready['patterns'])})" if ready["patterns"] else ""
        ret["comment"] = (
            f"{name} restarted ({'; '.join(reasons)}): {outcome['status']}, pid "
            f"stable, ready after {outcome['seconds']}s{seen}"
        )
        return
    ret["changes"]["ready"] = False
    comment = [
        f"{name} did NOT come up after the restart: {outcome['why']}. Status: {outcome['status']}.",
        "New log lines (secrets masked):",
        outcome["log"] or "(none)",
    ]
    if ready["rollback"]:
        report = __salt__["pm2_app.rollback"](
            name,
            env["file"],
            started,
            int(ready["timeout"]),
            int(env["backup_keep"]),
            backup_dir=env["backup_dir"],
            **pm2,
        )
        ret["changes"]["rollback"], note = _rollback_report(name, env["file"], started, report)
        comment.append(note)
    else:
        comment.append("Rollback is off (ready rollback: false): the app was left as it is")
    ret.update(result=False, comment="\n".join(comment))


def _rollback_report(name, env_file, since, report):
    """(changes, comment) of a rollback from what ``pm2_app.rollback`` returned."""
    source = report.get("env_restored_from")
    if not source:
        return {"recovered": False}, (
            f"Rollback: no serverfix backup of {env_file or 'the .env'} newer than the app's start "
            f"({_when(since)}): nothing to restore, not restarted again"
        )
    failed, seconds = report["failed_env_saved_as"], report["seconds_to_recover"]
    changes = {
        "env_restored_from": source,
        "failed_env_saved_as": failed,
        "recovered": report["recovered"],
        "seconds_to_recover": seconds,
    }
    if report["recovered"]:
        return changes, (
            f"Rollback: {env_file} restored from {source} (the failing one kept as "
            f"{failed}); {name} restarted and is back: {report['status']}, {seconds}s "
            "after the failure was detected"
        )
    return changes, (
        f"Rollback FAILED: {env_file} restored from {source} (the failing one kept as "
        f"{failed}) and {name} restarted, but {report['why']}; "
        f"status: {report['status']}"
    )


def mod_watch(name, sfun=None, **kwargs):
    """
    For users who write ``watch``: a watched state changed something. For
    ``restarted_ready`` that alone makes a restart pending (still only with the operator's
    consent); ``absent`` just runs. Over salt-ssh ``watch`` on this custom state becomes
    ``require`` and this is never called; the formula's ``backend.sls`` uses ``changes_from``.
    """
    funcs = {"restarted_ready": restarted_ready, "absent": absent}
    if sfun not in funcs:
        return {
            "name": name,
            "result": False,
            "changes": {},
            "comment": f"pm2.{sfun} does not support watch",
        }
    params = inspect.signature(funcs[sfun]).parameters
    args = {k: v for k, v in kwargs.items() if k in params and k != "name"}
    if sfun == "absent":
        return absent(name, **args)
    args = {k: args.get(k, params[k].default) for k in params if k != "name"}
    return _restarted_ready(name, upstream_changed=True, **args)
