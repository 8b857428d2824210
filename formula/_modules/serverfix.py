"""
serverfix: the formula's own execution module, the entry points of its formula layer.

- ``validate_pillar``: the ``serverfix`` pillar against its contract (``_utils/serverfix_schema``);
- ``check_redis_host``: the IPv4/IPv6 localhost pitfall (REDIS_HOST against the Redis bind);
- ``preflight``: every check before the formula changes anything (the ``serverfix.preflight``
  state); it asks the generic modules (dotenv, pm2, swapfile) and adds the pillar keys;
- ``diagnose`` / ``verify``: the runbook's analysis and its final checks, read-only, as reports
  (rules in ``_utils/serverfix_findings`` / ``serverfix_checks``, host facts in
  ``serverfix_facts``, settings in ``serverfix_settings``).

Runs inside the minion's own Python: standard library and salt only. Failures follow Salt's
contract: ``CommandExecutionError`` with every problem in ``exc.info["errors"]``.
"""

import shutil
import time
from typing import TYPE_CHECKING, Any

from salt.exceptions import SaltException

if TYPE_CHECKING:
    __salt__: dict[str, Any]
    __utils__: dict[str, Any]
    __pillar__: dict[str, Any]
    __context__: dict[str, Any]

__virtualname__ = "serverfix"
__outputter__ = {"diagnose": "serverfix_report", "verify": "serverfix_report"}

PILLAR_KEY = "serverfix"
REPORT_VERSION = 1

# Phase 3's SLS: processes.sls (prisma_studio.sls is its old name, kept as an include alias)
PROCESSES_PHASES = ("processes", "prisma_studio")

# the pillar section a generic module's preflight message is about (those modules know no pillar)
MODULE_KEYS = {
    "dotenv": "serverfix:dotenv:file",
    "redis_server": "serverfix:redis",
    "pm2": "serverfix:pm2",
    "swapfile": "serverfix:swap",
    "sysctl_persist": "serverfix:swap",
}


def __virtual__():
    return __virtualname__


def _own(dunder):
    """The loader behind ``__salt__``/``__utils__``, to hand to a _utils function: the dunder itself
    would be looked up in the loader that runs that function (the utils loader packs neither)."""
    return dunder.value() if hasattr(dunder, "value") else dunder


def _problems(errors):
    """Raise one ``CommandExecutionError`` carrying every message of ``errors``, if any."""
    __utils__["serverfix_errors.raise_problems"](errors)


def _raw_pillar(pillar):
    if pillar is None:
        pillar = __pillar__.get(PILLAR_KEY, {})
    return __utils__["serverfix_schema.plain"](pillar)


def validate_pillar(pillar=None):
    """
    Check the ``serverfix`` pillar against the formula's contract.

    Returns ``True`` when it is valid. Otherwise raises ``CommandExecutionError`` with one
    message per problem (also as a list in ``exc.info["errors"]``), each naming the pillar key,
    the bad value (``<secret>`` for secrets) and the expected form. Unknown keys are reported
    with the closest known key (a likely typo).

    pillar
        The ``serverfix`` pillar mapping to check; by default the minion's own pillar.

    CLI Example:

    .. code-block:: bash

        salt '*' serverfix.validate_pillar
        salt-call --local serverfix.validate_pillar pillar='{"redis": {"port": 70000}}'
    """
    _problems(__utils__["serverfix_schema.validate"](_raw_pillar(pillar), _own(__utils__)))
    return True


def _redis_host_problem(host, bind, port):
    addresses = __utils__["serverfix_facts.resolve_ordered"](host, port)
    if not addresses:
        return (
            f"{PILLAR_KEY}:redis:host: {host!r} does not resolve on this host; "
            "use 127.0.0.1 (the default)"
        )
    listen = {addr.lstrip("-!") for addr in __salt__["redis_server.bind_addresses"](bind)}
    if listen & {
        "*",
        "0.0.0.0",
        "::",
        "*::",
    }:  # wildcard binds cover everything (not loopback-only!)
        return ""
    missing = [addr for addr in addresses if addr not in listen]
    if missing:
        return (
            f"{PILLAR_KEY}:redis:host: {host!r} resolves to {', '.join(addresses)} but Redis will "
            f"listen on {', '.join(sorted(listen))} only ({', '.join(missing)} not covered: the "
            "IPv4/IPv6 localhost pitfall); set serverfix:redis:host to 127.0.0.1 or add the "
            "address to serverfix:redis:bind"
        )
    return ""


def check_redis_host(host, bind, port=6379):
    """
    Check that every address ``host`` resolves to is one Redis listens on.

    Returns ``True`` when the bind covers the host; otherwise raises ``CommandExecutionError``
    naming ``serverfix:redis:host``. ``localhost`` may resolve to ``::1`` first while Redis
    listens on 127.0.0.1 only: the runbook's IPv4/IPv6 pitfall.

    CLI Example:

    .. code-block:: bash

        salt '*' serverfix.check_redis_host localhost '["127.0.0.1"]'
    """
    problem = _redis_host_problem(host, bind, port)
    _problems([problem] if problem else [])
    return True


def _module_preflight(module, keys=None, **kwargs):
    """The problems ``<module>.preflight`` finds (none when that module is not loaded), each
    prefixed with the pillar key it is about: ``keys`` maps the module's argument names to pillar
    keys (a module that says which argument a problem is about gives ``exc.info["arguments"]``);
    otherwise the module's own pillar section, unless the message names a pillar key already."""
    func = f"{module}.preflight"
    if func not in __salt__:
        return []
    try:
        __salt__[func](**kwargs)
    except SaltException as exc:  # one error listing every problem in info["errors"]
        errors = __utils__["serverfix_errors.problems"](exc)
        info = exc.info if isinstance(getattr(exc, "info", None), dict) else {}
        arguments = list(info.get("arguments") or [])
    else:
        return []
    arguments += [None] * (len(errors) - len(arguments))
    keys = keys or {}
    return [
        msg if f"{PILLAR_KEY}:" in msg else f"{keys.get(arg) or MODULE_KEYS[module]}: {msg}"
        for arg, msg in zip(arguments, errors, strict=False)
    ]


def _redis_version_problems(redis):
    """Messages for a Redis (running, on PATH, installed or to be installed) older than
    ``redis:min_version`` ('' = no check)."""
    minimum = str(redis.get("min_version") or "")
    if not minimum:
        return []
    versions = __utils__["serverfix_redisversion.found"](
        redis["pkg"],
        _own(__salt__),
        port=redis["port"],
        host=redis["host"],
        password=redis["password"],
    )
    return __utils__["serverfix_redisversion.problems"](
        versions, minimum, f"{PILLAR_KEY}:redis:min_version"
    )


def _sysctl_values(swap):
    """The sysctls swap.sls persists (``overcommit_memory`` '' or null: left alone)."""
    values = {
        "vm.swappiness": swap["swappiness"],
        "vm.vfs_cache_pressure": swap["vfs_cache_pressure"],
    }
    if swap.get("overcommit_memory") not in ("", None):
        values["vm.overcommit_memory"] = swap["overcommit_memory"]
    return values


def preflight(config, pillar=None, phases=None):
    """
    Every check that must pass before the formula changes anything; read-only.

    Validates the raw pillar, then the merged settings (``config``, from map.jinja): no process
    both removed and kept, no Redis bind beyond loopback without ``redis:allow_remote`` and a
    password, that ``redis:host`` is covered by the Redis bind, that the backend's npm dotenv
    (``dotenv:npm_version`` or its ``node_modules/dotenv/package.json``) reads the ``.env`` as
    the formula writes it (15 and later), that the Redis running, on PATH, installed or that apt
    would install is at least ``redis:min_version`` (BullMQ: 6.2), that ``backups:dir`` can be
    created and written (read-only: it is made when the first backup needs it), and asks the
    ``dotenv``, ``pm2`` and ``swapfile`` modules for problems with the files and tools their
    phases need.
    Returns ``True`` when all is clear; otherwise raises ``CommandExecutionError`` with every
    problem (``exc.info["errors"]``: the messages, each naming the pillar key and the fix).

    config
        The merged settings (defaults.yaml + pillar), as the SLS files see them.
    pillar
        The raw ``serverfix`` pillar; by default the minion's own.
    phases
        The formula's SLS files in this run, by short name (``redis``, ``env``, ``processes``
        (or its old name ``prisma_studio``), ``swap``, ``backend``): only their files and tools
        are checked, so that ``state.apply serverfix.redis`` does not need a ``.env`` yet.
        ``None``: all. The pillar is always checked in full.

    CLI Example:

    .. code-block:: bash

        salt '*' serverfix.preflight "$(salt-call --local --out=json slsutil.renderer ...)"
    """
    # the merged settings are not trustworthy past invalid pillar values
    _problems(__utils__["serverfix_schema.validate"](_raw_pillar(pillar), _own(__utils__)))

    def in_run(*names):
        return phases is None or any(name in phases for name in names)

    # between keys (a kept process removed, a Redis open to other hosts), on what the SLS files use
    errors = __utils__["serverfix_schema.cross_check"](config)
    # every phase backs up the file it changes: a backup directory it cannot make stops the run
    backup_dir = config.get("backups", {}).get("dir", "")
    errors += [
        f"{PILLAR_KEY}:backups:dir: {problem}"
        for problem in __utils__["serverfix_files.backup_dir_problems"](backup_dir)
    ]
    redis = config["redis"]
    if redis["enabled"] and in_run(
        "redis", "env"
    ):  # the bind (Phase 1) must cover REDIS_HOST (Phase 2)
        problem = _redis_host_problem(redis["host"], redis["bind"], redis["port"])
        errors += [problem] if problem else []
        # an empty password never removes a requirepass set by hand (nor empties REDIS_PASSWORD)
        errors += _module_preflight(
            "redis_server",
            {"password": f"{PILLAR_KEY}:redis:password"},
            path=redis["config"],
            password=redis["password"],
            allow_remove=redis.get("remove_password", False),
        )
    if redis["enabled"] and in_run("redis"):  # BullMQ needs Redis >= 6.2: refuse an older one
        errors += _redis_version_problems(redis)
    pm2 = config["pm2"]
    startup = pm2.get("startup") and in_run("backend")
    if startup and "pm2_startup.home_for" in __salt__:  # pm2 startup writes PM2_HOME=<--hp>/.pm2
        try:
            __salt__["pm2_startup.home_for"](pm2["home"])
        except SaltException as exc:
            errors.append(
                f"{PILLAR_KEY}:pm2:home: {__utils__['serverfix_errors.message'](exc)}; or set "
                f"{PILLAR_KEY}:pm2:startup: false"
            )
    if startup and shutil.which("systemctl") is None:
        errors.append(
            f"{PILLAR_KEY}:pm2:startup: true runs `pm2 startup systemd`, but systemctl is not on "
            "PATH (not a systemd host); set it to false"
        )
    if (
        (config["remove_processes"] and in_run(*PROCESSES_PHASES))
        or (config["backend"]["restart"] and in_run("backend"))
        or startup
    ):
        keys = {
            "user": f"{PILLAR_KEY}:pm2:user",
            "pm2_home": f"{PILLAR_KEY}:pm2:home",
            "pm2_bin": f"{PILLAR_KEY}:pm2:bin",
        }
        errors += _module_preflight(
            "pm2", keys, user=pm2["user"], pm2_home=pm2["home"], pm2_bin=pm2["bin"]
        )
    dotenv = config["dotenv"]
    if in_run("env"):
        errors += _module_preflight("dotenv", path=dotenv["file"], create=dotenv["create"])
        found = __utils__["serverfix_npm.dotenv_version"](
            dotenv["file"], dotenv.get("npm_version", "")
        )
        problem = __utils__["serverfix_npm.version_problem"](
            found, f"{PILLAR_KEY}:dotenv:npm_version"
        )
        errors += [problem] if problem else []
    swap = config["swap"]
    if swap["enabled"] and in_run("swap"):
        errors += _module_preflight("swapfile", path=swap["file"], size=swap["size"])
        errors += _module_preflight(  # the sysctl drop-in is written whole: it must be ours
            "sysctl_persist",
            {"path": f"{PILLAR_KEY}:swap:sysctl_file", "values": f"{PILLAR_KEY}:swap"},
            path=swap["sysctl_file"],
            values=_sysctl_values(swap),
        )
    _problems(errors)
    return True


def _facts(config, proc_swaps, paths=None, reuse_pm2_list=False):
    """``(facts, pillar problems)`` of this host for ``config`` (see :func:`diagnose`)."""
    utils = _own(__utils__)
    cfg, errors, source = utils["serverfix_settings.load"](config, __pillar__, utils)
    facts = utils["serverfix_facts.gather"](
        cfg,
        _own(__salt__),
        utils,
        proc_swaps=proc_swaps,
        source=source,
        paths=paths,
        reuse_pm2_list=reuse_pm2_list,
    )
    return facts, errors


def _report(function, items, order, facts, start):
    key = "severity" if function == "diagnose" else "status"
    counts = {name: sum(1 for item in items if item[key] == name) for name in order}
    bad = ("critical", "warning") if function == "diagnose" else ("fail",)
    result = {
        "function": function,
        "version": REPORT_VERSION,
        "ok": not any(counts[name] for name in bad),
        "duration_ms": int((time.perf_counter() - start) * 1000),
        "counts": counts,
        "settings": facts.settings_summary(),
        "findings" if function == "diagnose" else "checks": items,
    }
    # the one masking rule: known secret values and URL passwords (_utils/serverfix_mask.py)
    return __utils__["serverfix_mask.scrub"](result, facts.secrets())


def diagnose(
    config=None,
    proc_swaps="/proc/swaps",
    meminfo="/proc/meminfo",
    cgroup_root="/sys/fs/cgroup",
    thp_enabled="/sys/kernel/mm/transparent_hugepage/enabled",
    systemd_root="/",
):
    """
    Find what the runbook's analysis ("Gefundene Probleme") found, on this host, read-only.

    Each finding has an ``id``, a ``severity`` (critical / warning / info), ``evidence`` with
    numbers and the ``fix`` (the SLS and the pillar key that change it). On the runbook's
    "before" server it reports exactly its four problems: ``redis-not-running`` (critical),
    ``env-queue-config`` (critical: QUEUE_ENABLED missing), ``swap-missing`` (warning) and
    ``pm2-unwanted-processes`` (warning: high RAM, prisma-studio in production), plus info items
    (``memory``, ``sysctl-values``). Other findings: ``redis-host-mismatch`` (REDIS_HOST resolves to
    an address Redis does not listen on), ``redis-auth-failed``, ``redis-not-loopback-only``,
    ``redis-eviction-policy``, ``env-unreadable``, ``env-shadowed-by-pm2``, ``backend-missing``,
    ``backend-not-online``, ``backend-restart-pending`` (the .env changed after the backend started,
    or its log shows a troubleshooting symptom whose cause is already fixed), ``memory-low``,
    ``pm2-unavailable``, ``pillar-invalid``, ``pm2-boot-unit`` (pm2-<user>.service missing,
    disabled or for another PM2_HOME) and ``backend-not-saved`` (the backend not in dump.pm2):
    info while serverfix:pm2:startup is false, else warnings; ``pm2-logs-large`` (a pm2 log over
    serverfix:pm2:log_warn_size) and ``pm2-logs-unrotated`` (info: neither pm2-logrotate nor a
    logrotate rule for the PM2_HOME); about the Redis that answers: ``redis-maxmemory``
    (not the wanted maxmemory; ``auto`` sizes it from the host's RAM), ``redis-thp`` (THP
    ``[always]`` and Redis's ``disable-thp`` not ``yes``), ``redis-warning-overcommit``,
    ``redis-warning-thp``, ``redis-warning-somaxconn`` and ``redis-warning`` (Redis's own
    ``WARNING`` lines since its last start, from its ``logfile`` or the journal; ``info`` when
    the cause is fixed since). Troubleshooting symptoms in the backend's log
    (``connect ECONNREFUSED``, ``Queue-System ist deaktiviert``, ``Redis nicht verfügbar - Workers
    werden nicht gestartet``) are attached to the finding that causes them (``backend_log``).

    The default outputter ``serverfix_report`` prints a table; ``--out=json`` gives this shape
    (stable: keys may be added, none renamed or removed; secret values never appear)::

        {"function": "diagnose", "version": 1,
         "ok": true when there is no critical and no warning finding,
         "duration_ms": int,
         "counts": {"critical": int, "warning": int, "info": int},
         "settings": {"env_file": str, "backend": str, "pm2_home": str, "redis_port": int,
                      "swap_file": str,
                      "source": "config" | "pillar" | "defaults only: ..." (where they came from)},
         "findings": [                        # critical first, then warning, then info
             {"id": str, "severity": "critical" | "warning" | "info",
              "title": str,                   # one line for a person
              "evidence": {name: number | string | bool | list | mapping},
              "fix": {"state": "serverfix.<sls>" | null, "pillar": "serverfix:<key>" | null,
                      "hint": str}}]}

    config
        The merged settings (as map.jinja renders them, a mapping or JSON); by default
        the formula's defaults (``_utils/serverfix_defaults.py``, generated from defaults.yaml)
        merged with the ``serverfix`` pillar. ``{"pillar": key}`` references in it are read from
        the pillar.
    proc_swaps
        Where to read the active swap areas; tests point it at a copy, since swap is kernel-global.
    systemd_root
        The root systemd's unit files are read under for pm2's boot unit (``/``; tests point it
        at a directory tree, since the unit is host-global).
    meminfo, cgroup_root, thp_enabled
        Where to read ``MemTotal``, the cgroup v2 tree (``memory.max``: with MemTotal, the RAM
        ``serverfix:redis:maxmemory: auto`` is sized from) and the transparent huge pages mode;
        tests point them at files of their own.

    CLI Example:

    .. code-block:: bash

        salt '*' serverfix.diagnose
        salt '*' serverfix.diagnose --out=json
    """
    start = time.perf_counter()
    paths = {
        "meminfo": meminfo,
        "cgroup_root": cgroup_root,
        "thp_enabled": thp_enabled,
        "systemd_root": systemd_root,
    }
    facts, pillar_errors = _facts(config, proc_swaps, paths)
    findings = __utils__["serverfix_findings.diagnose"](facts, pillar_errors)
    return _report("diagnose", findings, ("critical", "warning", "info"), facts, start)


def verify(
    config=None,
    proc_swaps="/proc/swaps",
    set_retcode=True,
    meminfo="/proc/meminfo",
    cgroup_root="/sys/fs/cgroup",
    thp_enabled="/sys/kernel/mm/transparent_hugepage/enabled",
    systemd_root="/",
    reuse_pm2_list=False,
):
    """
    Run the runbook's checks after the fix ("Verifizierung nach Fix" 1-4), read-only, in
    well under 2 s: pass / fail (/ warn / skip / info) per check, in this order:

    ``redis-service`` (active and enabled), ``redis-ping`` (PING -> PONG over the exact
    REDIS_HOST/REDIS_PORT/REDIS_PASSWORD of the .env, AUTH inside the socket),
    ``redis-loopback-only`` (and REDIS_HOST resolving to a listened address),
    ``redis-eviction-policy``, ``redis-maxmemory`` (the wanted maxmemory), ``redis-thp`` (THP
    not ``always``, or Redis's ``disable-thp yes``; warn), ``redis-warnings`` (none of Redis's
    startup warnings since its last start; warn), ``env-keys`` (the .env keys as the pillar says),
    ``env-not-shadowed`` (pm2's saved env does not override them), ``swap`` (active, with its
    size), ``sysctl``, ``pm2-online`` (every app), ``pm2-removed`` (absent from the list and the
    saved dump), ``backend-ready`` (the ready lines logged and no symptom after them; ``warn``
    instead of ``fail`` while serverfix:backend:restart is false and the backend still runs with
    the old .env), ``pm2-boot`` (pm2-<user>.service enabled for the PM2_HOME) and ``pm2-saved``
    (the backend in dump.pm2): ``warn`` instead of ``fail`` while serverfix:pm2:startup is
    false, ``memory`` (summary), ``http-probe`` (optional: serverfix:verify:url timed
    serverfix:verify:requests times, median against serverfix:verify:limit_ms).

    The salt return code is 1 when a check fails. The default outputter ``serverfix_report``
    prints a table; ``--out=json`` gives this shape (stable: keys may be added, none renamed or
    removed; secret values never appear)::

        {"function": "verify", "version": 1,
         "ok": true when no check has status "fail",
         "duration_ms": int,
         "counts": {"fail": int, "warn": int, "pass": int, "skip": int, "info": int},
         "settings": {...as diagnose},
         "checks": [                          # always all of them, in the order above
             {"id": str, "status": "pass" | "fail" | "warn" | "skip" | "info",
              "title": str, "evidence": {...}, "fix": {"state": ..., "pillar": ..., "hint": str}}]}

    config
        The merged settings (map.jinja); by default defaults.yaml merged with the pillar.
    proc_swaps
        Where to read the active swap areas (tests point it at a copy: swap is kernel-global).
    meminfo, cgroup_root, thp_enabled
        As in :func:`diagnose`.
    set_retcode
        Set the return code to 1 on a failed check (the ``serverfix.verified`` state passes False).
    systemd_root
        The root systemd's unit files are read under (``/``; tests give a directory tree).
    reuse_pm2_list
        Use the pm2 process list this state run has read already, when the run changed nothing
        in pm2, instead of a new ``pm2 jlist`` (the ``serverfix.verified`` state). By default a
        fresh one.

    CLI Example:

    .. code-block:: bash

        salt '*' serverfix.verify
        salt '*' serverfix.verify --out=json
    """
    start = time.perf_counter()
    paths = {
        "meminfo": meminfo,
        "cgroup_root": cgroup_root,
        "thp_enabled": thp_enabled,
        "systemd_root": systemd_root,
    }
    facts, _ = _facts(config, proc_swaps, paths, reuse_pm2_list)
    checks = __utils__["serverfix_checks.verify"](facts)
    result = _report("verify", checks, ("fail", "warn", "pass", "skip", "info"), facts, start)
    if set_retcode and not result["ok"]:
        __context__["retcode"] = 1
    return result
