"""
redis_server states: Phase 1's in-place ``redis.conf`` edit and the real ``PING`` check.

Thin over the ``redis_server`` execution module: the states decide, the module reads and writes
the file and talks to Redis. A refusal of the module (``SaltException``) becomes ``result: False``
with its message and no changes. Passwords never appear in changes or comments.
"""

from typing import TYPE_CHECKING, Any

from salt.exceptions import CommandExecutionError, SaltException

if TYPE_CHECKING:
    __salt__: dict[str, Any]
    __states__: dict[str, Any]
    __utils__: dict[str, Any]
    __opts__: dict[str, Any]
    __pillar__: dict[str, Any]

__virtualname__ = "redis_server"


def __virtual__():
    if "redis_server.config_plan" in __salt__:
        return __virtualname__
    return (
        False,
        "the redis_server execution module is not loaded: run saltutil.sync_all, "
        "or state.apply serverfix sync_mods=all",
    )


def _yes_no(flag):
    return "yes" if flag else "no"


def _failed(ret, exc):
    ret.update(result=False, changes={}, comment=__utils__["serverfix_errors.message"](exc))
    return ret


def _predict_package_default(ret, name, pkg, settings):
    """Test mode before the package is installed: plan against the config file inside ``pkg``."""
    plan = __salt__["redis_server.package_default_plan"](pkg, name, settings)
    ret["result"] = None
    ret["comment"] = f"{name} does not exist yet; after {pkg} installs it, would set "
    if plan is None:  # package file unavailable: every managed directive is a candidate
        ret["comment"] += "(package defaults unknown) "
        plan = {
            "changes": {
                key: {"old": None, "new": "<secret>" if key == "requirepass" else value}
                for key, value in settings.items()
                if value is not None
            }
        }
    ret["comment"] += ", ".join(plan["changes"]) + "."
    ret["changes"] = plan["changes"]
    return ret


def _aof_plan(name, settings, plan, port, password):
    """How ``appendonly yes`` is reached without data loss: ``None`` (nothing to do at run
    time), or the running server's status when it must be switched on there first. Raises
    ``CommandExecutionError`` when Redis is down and a start with AOF would drop its RDB."""
    if settings["appendonly"] != "yes":
        return None
    host = settings["bind"].split()[0].lstrip("-!") if settings["bind"] else "127.0.0.1"
    status = __salt__["redis_server.aof_status"](name, host=host, port=port, password=password)
    if status["running"]:
        return status if status["appendonly"] == "no" else None
    if status["rdb"] and "appendonly" in plan["changes"]:
        raise CommandExecutionError(
            f"Redis is not running and {status['rdb']} holds its data: started with appendonly "
            "yes and no AOF yet, Redis would ignore that file and start empty "
            "(redis/redis#12484). Start Redis with its current config and run again: AOF is "
            "then switched on at run time first, keeping every key."
        )
    return None


def configured(
    name,
    bind,
    port=6379,
    password="",
    maxmemory="",
    maxmemory_policy="noeviction",
    appendonly=True,
    appendfsync="everysec",
    backup_keep=5,
    pkg="redis-server",
    remove_password=False,
    backup_dir="/var/backups/serverfix",
    service="redis-server",
):
    """
    Edit the redis.conf at ``name`` in place: loopback bind, protected mode, ``supervised auto``,
    port, eviction policy, AOF persistence and ``requirepass`` (only when a password is set).
    Debian's other defaults and comments stay.

    An empty ``password`` while Redis has a ``requirepass`` is refused (nothing changes) unless
    ``remove_password`` is true: authentication is never switched off by default.

    Turning AOF on keeps the data (redis/redis#12484): when the running Redis has ``appendonly
    no``, AOF is switched on at run time first (``CONFIG SET`` over the connection Redis has now,
    before a restart applies a new bind, port or password), and the config is written once the
    rewrite is done. A stopped Redis whose RDB holds data is refused (start it first).

    A directive that a file included by ``name`` sets after the edited line is refused with that
    file's name (Redis would read it last); only ``name`` is edited.

    In test mode on a host without the package yet, the edit is planned against the config
    file inside package ``pkg`` (downloaded to a temp dir), so the preview names exactly what
    the real run will change.

    ``password`` may be a ``{"pillar": "<key>"}`` reference, read from the pillar when the state
    runs, so it is not in the compiled state data.

    IPv6 addresses in ``bind`` are dropped on a host without IPv6 loopback, where Redis would
    otherwise fail to start. ``maxmemory`` ``''`` leaves that directive alone; ``auto`` sizes it
    for this host (``serverfix_redismem.auto_maxmemory``: 1/8 of the smaller of MemTotal and
    the cgroup v2 limit over ``service``, 64mb to 1gb), and the changes show the value chosen.

    The backup of ``name`` goes below ``backup_dir`` (its path mirrored, created 0700;
    ``''``: next to it), and the comment says where.

    .. code-block:: yaml

        /etc/redis/redis.conf:
          redis_server.configured:
            - bind: [127.0.0.1, -::1]
            - port: 6379
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    password = __utils__["serverfix_pillar.resolve"](password, __pillar__)
    settings = {
        "bind": " ".join(__salt__["redis_server.bind_addresses"](bind)),
        "protected-mode": "yes",
        "port": str(port),
        "supervised": "auto",
        "maxmemory-policy": maxmemory_policy,
        "appendonly": _yes_no(appendonly),
        "appendfsync": appendfsync,
        "requirepass": password or None,
    }
    # auto -> the size for this host's RAM (pseudo-files under /proc and /sys, read-only)
    maxmemory = __utils__["serverfix_redismem.resolve_maxmemory"](maxmemory, service=service)
    if maxmemory["value"]:
        settings["maxmemory"] = maxmemory["value"]
    if not __salt__["file.file_exists"](name):
        if __opts__["test"]:
            return _predict_package_default(ret, name, pkg, settings)
        ret["result"] = False
        ret["comment"] = f"{name}: no such file; is the Redis package ({pkg}) installed?"
        return ret
    try:
        __utils__["serverfix_files.check_backup_dir"](backup_dir)
        __salt__["redis_server.preflight"](name, password=password, allow_remove=remove_password)
        plan = __salt__["redis_server.config_plan"](name, settings)
        aof = _aof_plan(name, settings, plan, port, password)
    except SaltException as exc:
        return _failed(ret, exc)
    if not plan["changes"] and not aof:
        ret["comment"] = f"{name} already has the wanted settings."
        return ret
    ret["changes"] = dict(plan["changes"])
    edits = f"set {', '.join(plan['changes'])}" if plan["changes"] else "nothing else to set"
    first = ""
    if aof:
        first = f"AOF switched on at run time first, {aof['keys']} keys kept; then "
        ret["changes"]["aof"] = {"old": "off (running Redis)", "new": "on, switched at run time"}
    where = __utils__["serverfix_files.backup_location"](name, backup_dir)
    if __opts__["test"]:
        ret["result"] = None
        backup = f" (after a backup in {where})" if plan["changes"] else ""
        ret["comment"] = f"{name}: {first}would {edits}{backup}."
        return ret
    try:
        if aof:
            host = settings["bind"].split()[0].lstrip("-!")
            done = __salt__["redis_server.aof_enable"](
                name, host=host, port=port, password=password
            )
            first = (
                f"AOF switched on at run time first ({done['address']}), "
                f"{done['keys']} keys kept; then "
            )
        if plan["changes"]:
            __salt__["redis_server.config_set"](
                name, settings, backup_keep=backup_keep, backup_dir=backup_dir
            )
    except SaltException as exc:
        return _failed(ret, exc)
    backup = f" (backup in {where})" if plan["changes"] else ""
    ret["comment"] = f"{name}: {first}{edits}{backup}."
    return ret


def pong(name, port=6379, password="", timeout=15):
    """
    Fail unless Redis at host ``name`` answers ``PING`` with ``PONG`` (AUTH first when a
    password is set, over the socket). Retries up to ``timeout`` seconds after a restart.
    In test mode a Redis that is not there yet is reported as ``None`` (checked on the real run).
    ``password`` may be a ``{"pillar": "<key>"}`` reference, as in ``configured``.

    .. code-block:: yaml

        redis-answers-ping:
          redis_server.pong:
            - name: 127.0.0.1
            - port: 6379
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    test = __opts__["test"]
    password = __utils__["serverfix_pillar.resolve"](password, __pillar__)
    try:
        __salt__["redis_server.wait_pong"](
            host=name, port=port, password=password, timeout=0 if test else timeout
        )
    except SaltException as exc:
        error = __utils__["serverfix_errors.message"](exc)
        if test:
            ret["result"] = None
            ret["comment"] = (
                f"Redis does not answer yet ({error}); "
                "the real run checks PING -> PONG after installing and "
                "configuring it."
            )
            return ret
        ret["result"] = False
        ret["comment"] = (
            f"Redis did not answer PING with PONG within {timeout}s: {error}. "
            "Check `journalctl -u redis-server -n 50` and the bind and port "
            "in its config."
        )
        return ret
    ret["comment"] = f"Redis at {name}:{port} answered PING with PONG."
    return ret


def _predict(ret, name):
    # Salt's service states say "set to start/restart" in test mode but leave changes empty,
    # while the real run reports {name: True}: fill it in so the preview matches the run
    if __opts__["test"] and ret["result"] is None and not ret["changes"]:
        ret["changes"] = {name: True}
    return ret


def _port_taken(config):
    """Why Redis cannot start, when another program holds its port: who, and the fix."""
    try:
        port = int(__salt__["redis_server.config_get"](config).get("port", "6379"))
    except (SaltException, ValueError):
        return ""
    others = [o for o in __salt__["redis_server.port_owners"](port) if o["name"] != "redis-server"]
    if not others:
        return ""
    who = ", ".join(f"{o['name']} (pid {o['pid']})" for o in others)
    return (
        f" Port {port} is already in use by {who}: stop that program, or give Redis another port "
        f"(the port in {config}); the states that require Redis did not run."
    )


def running(name, enable=True, config=""):
    """
    ``service.running`` for the Redis service, with an exact test-mode prediction, and enabled
    at boot also when a config change restarts it (Salt's ``mod_watch`` only restarts).

    config
        The ``redis.conf``: Redis is restarted when a ``configured`` state of this run changed it
        (test mode: predicts that), and when the Redis process started before its last change.
        This replaces ``watch``, which over salt-ssh is turned into ``require`` (the master-side
        compile does not know this module's ``mod_watch``) and misses a run cut off between the
        edit and the restart.

    .. code-block:: yaml

        redis-server:
          redis_server.running:
            - enable: true
            - config: /etc/redis/redis.conf
            - require:
              - redis_server: /etc/redis/redis.conf
    """
    ret = _predict(__states__["service.running"](name, enable=enable), name)
    # starts refused earlier (port taken) can leave systemd's start limit hit, which refuses
    # this start too even once the cause is gone: reset the unit and try once more. Only on a
    # failure, so a no-op run makes no extra systemctl call
    if ret["result"] is False and __salt__["redis_server.reset_failed"](name):
        ret = _predict(__states__["service.running"](name, enable=enable), name)
        ret["comment"] = (
            f"{name} was in systemd's failed state (start limit); reset it and started again: "
            f"{ret['comment']}"
        )
    if ret["result"] is False and config:
        ret["comment"] += _port_taken(config)
    why = ""
    if config and ret["result"] and not ret["changes"]:
        stale = __salt__["redis_server.started_before"](config)
        if stale:
            why = f"pid {', '.join(map(str, stale))} started before {config} last changed"
        elif __utils__["serverfix_run.changed_earlier"](
            globals().get("__running__"), state="redis_server.configured", name=config
        ):  # what `watch` did; in test mode: what will happen
            why = f"{config} changed in this run" + (
                " (test mode: will change)" if __opts__["test"] else ""
            )
    if not why:
        return ret
    restarted = mod_watch(name, enable=enable)
    restarted["comment"] = f"{why}: {restarted['comment']}"
    return restarted


def mod_watch(name, enable=True, **kwargs):
    """Restart (or start) the service when a watched state changed, then make sure it is enabled."""
    kwargs["sfun"] = (
        "running"  # Salt passes our function name; the same one service.mod_watch knows
    )
    kwargs.pop("config", None)  # ours (running), not service.mod_watch's
    ret = _predict(__states__["service.mod_watch"](name, **kwargs), name)
    if enable and ret["result"] is not False:
        enabled = __states__["service.enabled"](name)
        ret["changes"].update(enabled["changes"])
        if enabled["result"] is False:
            ret["result"] = False
        ret["comment"] = f"{ret['comment']}; {enabled['comment']}"
    return ret
