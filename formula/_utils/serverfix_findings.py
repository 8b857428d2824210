"""
The diagnose rules: the runbook's analysis ("Gefundene Probleme") as findings, each with an
``id``, a ``severity``, ``evidence`` and the ``fix``, from the read-once :class:`Facts
<serverfix_facts.Facts>` of one run. Log symptoms are attached to the finding that causes them.
Used by ``serverfix.diagnose``; reached as ``__utils__["serverfix_findings.diagnose"]``.
"""

import os
import shlex
import time

SEVERITY_ORDER = ("critical", "warning", "info")
MEMORY_LOW_PERCENT = 10  # MemAvailable below this share of RAM is a warning
QUEUE_KEY = "QUEUE_ENABLED"


def _redis_evidence(facts):
    target = facts.redis_target
    listening = facts.listening[0] or []
    return {
        "host": target["host"],
        "port": target["port"],
        "from": target["source"],
        "password_set": bool(target["password"]),
        "package_installed": facts.package_installed,
        "service": facts.cfg["redis"]["service"],
        "service_running": facts.service_running[0],
        "listening": listening,
        "ping": "PONG" if facts.ping["ok"] else facts.ping["error"],
    }


def _diagnose_redis(facts):
    """Redis down / unreachable on REDIS_HOST / auth / bind / eviction policy findings."""
    findings = []
    target = facts.redis_target
    listening, listen_error = facts.listening
    evidence = _redis_evidence(facts)
    where = f"{target['host']}:{target['port']}"
    if listen_error and not facts.ping["ok"]:
        evidence["error"] = listen_error
        return [
            facts.finding(
                "redis-unchecked",
                "warning",
                f"Redis cannot be checked: {listen_error}",
                evidence,
                facts.fix("serverfix.redis", "serverfix:redis"),
            )
        ]
    if not listening and not facts.ping["ok"]:
        state = "not installed" if facts.package_installed is False else "not running"
        findings.append(
            facts.finding(
                "redis-not-running",
                "critical",
                f"Redis is {state}: nothing listens on port {target['port']} (the queue runs in "
                "the slow synchronous fallback)",
                evidence,
                facts.fix(
                    "serverfix.redis",
                    "serverfix:redis",
                    "install, configure and start Redis (runbook Phase 1)",
                ),
            )
        )
        return findings
    first = facts.resolved[0] if facts.resolved else None
    if listening and (first is None or not facts.covered(first, listening)):
        evidence["resolves_to"] = facts.resolved
        findings.append(
            facts.finding(
                "redis-host-mismatch",
                "critical",
                f"REDIS_HOST {target['host']!r} resolves to "
                f"{', '.join(facts.resolved) or 'nothing'} but Redis "
                f"listens on {', '.join(listening)} (the IPv4/IPv6 localhost pitfall)",
                evidence,
                facts.fix(
                    "serverfix.env",
                    "serverfix:redis:host",
                    "use REDIS_HOST=127.0.0.1 (or add the address to serverfix:redis:bind)",
                ),
            )
        )
    elif not facts.ping["ok"]:
        error = facts.ping["error"] or ""
        auth = any(word in error for word in ("NOAUTH", "WRONGPASS", "invalid password", "AUTH"))
        findings.append(
            facts.finding(
                "redis-auth-failed" if auth else "redis-not-answering",
                "critical",
                f"Redis at {where} does not answer PING with PONG: {error}",
                evidence,
                facts.fix(
                    "serverfix.env" if auth else "serverfix.redis",
                    "serverfix:redis:password" if auth else "serverfix:redis",
                    "REDIS_PASSWORD in the .env must match Redis' requirepass"
                    if auth
                    else "check `journalctl -u redis-server -n 50`",
                ),
            )
        )
    public = [a for a in listening if not facts.is_loopback(a)]
    if public:
        findings.append(
            facts.finding(
                "redis-not-loopback-only",
                "warning",
                f"Redis listens on {', '.join(public)}, not only on loopback",
                {"listening": listening, "port": target["port"]},
                facts.fix("serverfix.redis", "serverfix:redis:bind", "bind 127.0.0.1 -::1"),
            )
        )
        if not target["password"]:
            findings.append(
                facts.finding(
                    "redis-remote-without-password",
                    "critical",
                    f"Redis listens on {', '.join(public)} and the backend uses no password: "
                    "anyone who reaches the port can read and change the queue",
                    {"listening": listening, "port": target["port"], "password_set": False},
                    facts.fix(
                        "serverfix.redis",
                        "serverfix:redis:password",
                        "bind 127.0.0.1 -::1, or set serverfix:redis:password "
                        "(serverfix:redis:allow_remote: true)",
                    ),
                )
            )
    policy, error = facts.eviction_policy
    wanted = facts.cfg["redis"]["maxmemory_policy"]
    if policy is not None and policy != wanted:
        findings.append(
            facts.finding(
                "redis-eviction-policy",
                "warning",
                f"Redis maxmemory-policy is {policy}, not {wanted} (queue jobs and their locks "
                "may be evicted)",
                {"maxmemory_policy": policy, "wanted": wanted},
                facts.fix("serverfix.redis", "serverfix:redis:maxmemory_policy"),
            )
        )
    elif policy is None and facts.ping["ok"]:
        findings.append(
            facts.finding(
                "redis-eviction-policy-unknown",
                "info",
                f"maxmemory-policy could not be read: {error}",
                {"error": error},
                facts.fix(None, "serverfix:redis:maxmemory_policy"),
            )
        )
    return findings


def _diagnose_dotenv_version(facts):
    """Which npm dotenv reads the .env (the formula's rules hold from 15 on), as a finding."""
    dotenv = facts.cfg["dotenv"]
    key = "serverfix:dotenv:npm_version"
    found = facts.utils["serverfix_npm.dotenv_version"](dotenv["file"], dotenv.get("npm_version"))
    problem = facts.utils["serverfix_npm.version_problem"](found, key)
    if problem:
        return facts.finding(
            "env-dotenv-version", "warning", problem, found, facts.fix("serverfix.env", key)
        )
    if found["version"] is None:
        title = (
            "No node_modules/dotenv/package.json in or above the .env's directory: a current "
            "npm dotenv (16.x-18.x rules) is assumed"
        )
    else:
        title = f"The backend reads its .env with npm dotenv {found['version']} ({found['source']})"
    return facts.finding("env-dotenv-version", "info", title, found, facts.fix(None, key))


def _diagnose_env(facts):
    env, error = facts.env
    path = facts.cfg["dotenv"]["file"]
    if env is None:
        return [
            facts.finding(
                "env-unreadable",
                "critical",
                f"The backend's .env cannot be read: {error}",
                {"file": path, "error": error},
                facts.fix(
                    "serverfix.env",
                    "serverfix:dotenv:file",
                    "point serverfix:dotenv:file at the "
                    "backend's .env (or set serverfix:dotenv:create: true)",
                ),
            )
        ]
    missing, different = facts.env_differences()
    if not missing and not different:
        return []
    wanted_queue = facts.wanted[QUEUE_KEY]
    queue_wrong = env.get(QUEUE_KEY) != wanted_queue and wanted_queue == "true"
    if queue_wrong:
        found = "missing" if QUEUE_KEY not in env else f"{env[QUEUE_KEY]!r}"
        title = (
            f"Queue not configured: {QUEUE_KEY} is {found} in {path} (the backend uses the "
            "synchronous fallback)"
        )
    else:
        title = f"{path} differs from the pillar in {len(missing) + len(different)} key(s)"
    return [
        facts.finding(
            "env-queue-config",
            "critical" if queue_wrong else "warning",
            title,
            {"file": path, "missing": missing, "different": different, "keys_in_file": len(env)},
            facts.fix(
                "serverfix.env",
                "serverfix:queue",
                "write the REDIS_* and QUEUE_* keys (runbook Phase 2; a backup is made first)",
            ),
        )
    ]


def _diagnose_pm2(facts):
    findings = []
    procs, error = facts.pm2
    backend = facts.backend_name
    pm2_fix = facts.fix(
        None,
        "serverfix:pm2:bin",
        "set serverfix:pm2:bin/user/home to the pm2 that runs the backend",
    )
    if procs is None:
        return [
            facts.finding(
                "pm2-unavailable",
                "warning",
                f"pm2's process list cannot be read: {error}",
                {"pm2_home": facts.cfg["pm2"]["home"], "error": error},
                pm2_fix,
            )
        ]
    memory = facts.memory
    if facts.backend is None:
        findings.append(
            facts.finding(
                "backend-missing",
                "critical",
                f"{backend} is not in pm2's list",
                {"processes": sorted(p["name"] for p in procs)},
                facts.fix(
                    None, "serverfix:backend:name", "start the backend under pm2 or fix the name"
                ),
            )
        )
    elif facts.backend.get("status") != "online":
        findings.append(
            facts.finding(
                "backend-not-online",
                "critical",
                f"{backend} is {facts.backend.get('status')}, not online",
                {
                    "status": facts.backend.get("status"),
                    "restarts": facts.backend.get("restart_time"),
                },
                facts.fix("serverfix.backend", "serverfix:backend:restart"),
            )
        )
    saved, saved_error = facts.saved
    unwanted = facts.cfg["remove_processes"]
    running = {p["name"]: facts.mb(p.get("memory") or 0) for p in procs if p["name"] in unwanted}
    in_dump = sorted(set(saved or []) & set(unwanted))
    if running or in_dump:
        names = ", ".join(sorted(set(running) | set(in_dump)))
        parts = [f"{name} runs in production ({mb} MB)" for name, mb in sorted(running.items())]
        parts += [
            f"{name} is in pm2's saved dump (returns after a reboot)"
            for name in in_dump
            if name not in running
        ]
        title = "High RAM use: " + "; ".join(parts)
        back = memory["processes"].get(backend)
        if back:
            title += f"; {backend} uses {back['memory_mb']} MB ({back['percent']} % of RAM)"
        evidence = {
            "running_mb": running,
            "in_saved_dump": in_dump,
            "ram_total_mb": memory["total_mb"],
            "ram_used_percent": memory["used_percent"],
        }
        if back:
            evidence.update(backend_mb=back["memory_mb"], backend_percent=back["percent"])
        if saved_error:
            evidence["dump_error"] = saved_error
        findings.append(
            facts.finding(
                "pm2-unwanted-processes",
                "warning",
                title,
                evidence,
                facts.fix(
                    "serverfix.prisma_studio",
                    "serverfix:remove_processes",
                    f"pm2 delete {names} and pm2 save (runbook Phase 3)",
                ),
            )
        )
    shadowed = facts.shadowed()
    if shadowed:
        findings.append(
            facts.finding(
                "env-shadowed-by-pm2",
                "warning",
                f"pm2 passes {', '.join(shadowed)} from {backend}'s saved start environment: "
                "edits in the .env "
                "have no effect until it is deleted and started again",
                {"keys": shadowed},
                facts.fix(
                    "serverfix.backend",
                    "serverfix:backend:shadowed_env",
                    f"pm2 delete {backend} and start it again from its ecosystem file (restart "
                    "keeps the old env)",
                ),
            )
        )
    return findings


def _diagnose_logs(facts, findings):
    """Attach log symptoms to the finding that causes them; the rest means the backend needs a
    restart."""
    by_id = {f["id"]: f for f in findings}
    stale = []
    for hit in facts.log_state["symptoms"]:
        symptom = hit["symptom"]
        cause = next((by_id[c] for c in symptom["causes"] if c in by_id), None)
        record = {
            "symptom": symptom["pattern"],
            "count": hit["count"],
            "last_line": hit["line"],
            "fix": symptom["fix"],
        }
        if cause is not None:
            cause["evidence"].setdefault("backend_log", []).append(record)
        else:
            stale.append(record)
    backend = facts.backend_name
    if stale or facts.restart_pending:
        evidence = {"log_symptoms": stale}
        if facts.restart_pending:
            evidence["env_changed_after_start"] = True
            evidence["backend_started"] = time.strftime(
                "%Y-%m-%d %H:%M:%S", time.localtime(facts.started)
            )
            evidence["env_changed"] = time.strftime(
                "%Y-%m-%d %H:%M:%S", time.localtime(facts.env_mtime)
            )
        reason = (
            f"its log shows {', '.join(repr(s['symptom']) for s in stale)} whose cause is fixed"
            if stale
            else "the .env changed after it started"
        )
        findings.append(
            facts.finding(
                "backend-restart-pending",
                "warning",
                f"{backend} still runs with the old settings: {reason}",
                evidence,
                facts.fix(
                    "serverfix.backend",
                    "serverfix:backend:restart",
                    f"restart {backend} after consultation (runbook Phase 5): pillar "
                    "serverfix:backend:restart: true",
                ),
            )
        )
    log_error = facts.logs[1]
    if log_error and facts.backend is not None:
        findings.append(
            facts.finding(
                "backend-log-unreadable",
                "info",
                f"{backend}'s log cannot be read: {log_error}",
                {"error": log_error},
                facts.fix(None, "serverfix:pm2:home"),
            )
        )


def _diagnose_system(facts):
    findings = []
    memory = facts.memory
    swap = facts.cfg["swap"]
    swaps, swaps_error = facts.swaps
    total_swap = sum(s["size_bytes"] for s in swaps)
    swapfile, _ = facts.swapfile
    if swaps_error:
        findings.append(
            facts.finding(
                "swap-unknown",
                "info",
                f"Active swap cannot be read: {swaps_error}",
                {"error": swaps_error},
                facts.fix("serverfix.swap", "serverfix:swap"),
            )
        )
    elif not swaps and swap["enabled"]:  # swap:enabled false: no swap is what was asked for
        findings.append(
            facts.finding(
                "swap-missing",
                "warning",
                f"No swap: 0 B swap for {memory['total_mb']} MB RAM, {memory['used_percent']} % "
                "used "
                "(no room for load peaks)",
                {
                    "swap_total_mb": 0,
                    "ram_total_mb": memory["total_mb"],
                    "ram_used_percent": memory["used_percent"],
                    "wanted_file": swap["file"],
                    "wanted_size": str(swap["size"]),
                },
                facts.fix(
                    "serverfix.swap",
                    "serverfix:swap",
                    f"create {swap['size']} {swap['file']} (runbook Phase 4)",
                ),
            )
        )
    elif swap["enabled"] and not (swapfile or {}).get("active"):
        findings.append(
            facts.finding(
                "swap-file-inactive",
                "info",
                f"{swap['file']} is not active; other swap: {facts.mb(total_swap)} MB",
                {
                    "active_swaps": [s["filename"] for s in swaps],
                    "swap_total_mb": facts.mb(total_swap),
                },
                facts.fix("serverfix.swap", "serverfix:swap:file"),
            )
        )
    if memory["available_percent"] is not None and memory["available_percent"] < MEMORY_LOW_PERCENT:
        findings.append(
            facts.finding(
                "memory-low",
                "warning",
                f"Only {memory['available_mb']} MB ({memory['available_percent']} %) of RAM "
                "available",
                memory,
                facts.fix(
                    "serverfix.prisma_studio",
                    "serverfix:remove_processes",
                    "stop what production does not need",
                ),
            )
        )
    procs = ", ".join(
        f"{name} {p['memory_mb']} MB ({p['percent']} %)" for name, p in memory["processes"].items()
    )
    findings.append(
        facts.finding(
            "memory",
            "info",
            f"RAM {memory['total_mb']} MB, {memory['available_mb']} MB available "
            f"({memory['used_percent']} % used); "
            f"swap {facts.mb(total_swap)} MB" + (f"; pm2: {procs}" if procs else ""),
            dict(memory, swap_total_mb=facts.mb(total_swap)),
            facts.fix(),
        )
    )
    differ = {k: v for k, v in facts.sysctl.items() if v["current"] != v["wanted"]}
    if swap["enabled"] and differ:
        findings.append(
            facts.finding(
                "sysctl-values",
                "info",
                "; ".join(f"{k}={v['current']} (wanted {v['wanted']})" for k, v in differ.items()),
                facts.sysctl,
                facts.fix("serverfix.swap", "serverfix:swap:swappiness", "runbook step 4.2"),
            )
        )
    return findings


BACKUP_TAGS = ("serverfix", "failed")  # the dotenv/config backups and the rollback's copies


def _diagnose_old_backups(facts):
    """Backups that earlier versions left next to the files the formula changes (the .env's sit
    in the app directory: git or the web server can see them). Never moved or deleted by the
    formula: a finding with the paths and the move. ``backups:dir: ''`` keeps them there on
    purpose: no finding."""
    cfg = facts.cfg
    backup_dir = (cfg.get("backups") or {}).get("dir", "")
    if not backup_dir:
        return []
    files = [cfg["dotenv"]["file"]]
    files += [cfg["redis"]["config"]] if cfg["redis"]["enabled"] else []
    files += ["/etc/fstab", cfg["swap"]["sysctl_file"]] if cfg["swap"]["enabled"] else []
    found, moves = [], []
    for path in files:
        try:
            beside = [
                name
                for tag in BACKUP_TAGS
                for name in facts.utils["serverfix_files.list_backups"](path, tag)
            ]
        except (OSError, TypeError, ValueError):
            continue
        if beside:
            found += beside
            target = facts.utils["serverfix_files.backup_location"](path, backup_dir)
            quoted = " ".join(shlex.quote(name) for name in beside)
            moves.append(
                f"mkdir -p -m 0700 {shlex.quote(target)} && mv {quoted} {shlex.quote(target)}"
            )
    if not found:
        return []
    env_dir = os.path.dirname(os.path.realpath(cfg["dotenv"]["file"])) + "/"
    in_app = [name for name in found if name.startswith(env_dir)]
    return [
        facts.finding(
            "backups-beside-files",
            "warning" if in_app else "info",
            f"{len(found)} backup(s) from an earlier version sit next to the files they copy"
            + (f", {len(in_app)} in the app directory {env_dir}" if in_app else "")
            + f" (now they go to {backup_dir})",
            {"files": found, "backup_dir": backup_dir},
            facts.fix(
                None,
                "serverfix:backups:dir",
                "move them out of the app directory into the backup directory (the formula "
                "never moves or deletes them; the rollback still finds them there): "
                + "; ".join(moves),
            ),
        )
    ]


def diagnose(facts, pillar_errors=()):
    """The findings of one run, critical first (rule order within a severity); ``pillar_errors``
    (the schema's messages for the raw pillar) become a ``pillar-invalid`` finding."""
    findings = []
    if pillar_errors:
        findings.append(
            facts.finding(
                "pillar-invalid",
                "critical",
                "The serverfix pillar is not valid",
                {"errors": list(pillar_errors)},
                facts.fix(None, "serverfix", "see pillar.example"),
            )
        )
    if facts.cfg["redis"]["enabled"]:
        findings += _diagnose_redis(facts)
        # maxmemory, transparent huge pages, Redis's own startup warnings
        findings += facts.utils["serverfix_redisreport.findings"](facts)
    findings += _diagnose_env(facts)
    findings.append(_diagnose_dotenv_version(facts))
    findings += _diagnose_pm2(facts)
    # pm2 at boot and pm2's log growth (_utils/serverfix_pm2boot.py)
    findings += facts.utils["serverfix_pm2boot.findings"](facts)
    findings += facts.utils["serverfix_pm2boot.log_findings"](facts)
    _diagnose_logs(facts, findings)
    findings += _diagnose_system(facts)
    findings += _diagnose_old_backups(facts)
    findings.sort(
        key=lambda f: SEVERITY_ORDER.index(f["severity"])
    )  # stable: rule order within a severity
    return findings
