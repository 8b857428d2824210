"""
The verify checks: the runbook's checks after the fix ("Verifizierung nach Fix" 1-4), pass /
fail / warn / skip / info each, from the read-once :class:`Facts <serverfix_facts.Facts>` of one
run, plus the optional HTTP probe (the only check that sends a request of its own).
Used by ``serverfix.verify``; reached as ``__utils__["serverfix_checks.verify"]``.
"""

import statistics
import time
import urllib.error
import urllib.request

SECRET = "<secret>"
VERIFY_CHECKS = (
    "redis-service",
    "redis-ping",
    "redis-loopback-only",
    "redis-eviction-policy",
    "redis-maxmemory",
    "redis-thp",
    "redis-warnings",
    "env-keys",
    "env-not-shadowed",
    "swap",
    "sysctl",
    "pm2-online",
    "pm2-removed",
    "backend-ready",
    "pm2-boot",
    "pm2-saved",
    "memory",
    "http-probe",
)
STATUS_ORDER = ("fail", "warn", "pass", "skip", "info")
PROBE_BUDGET = 1.0  # seconds for the whole HTTP probe, so verify stays under 2 s


def _verify_redis(facts):
    cfg = facts.cfg["redis"]
    if not cfg["enabled"]:
        return [
            facts.check(cid, "skip", "serverfix:redis:enabled is false", {})
            for cid in (
                "redis-service",
                "redis-ping",
                "redis-loopback-only",
                "redis-eviction-policy",
            )
        ]
    target, service = facts.redis_target, cfg["service"]
    (running, error_running), (enabled, error_enabled) = (
        facts.service_running,
        facts.service_enabled,
    )
    fix = facts.fix("serverfix.redis", "serverfix:redis")
    checks = [
        facts.check(
            "redis-service",
            "pass" if running and enabled else "fail",
            f"service {service}: {'running' if running else 'not running'}, "
            f"{'enabled' if enabled else 'not enabled'} at boot",
            {
                "service": service,
                "running": running,
                "enabled": enabled,
                "package_installed": facts.package_installed,
                "error": error_running or error_enabled,
            },
            fix,
        )
    ]
    ping = facts.ping
    where = f"{target['host']}:{target['port']}"
    auth = " with AUTH" if target["password"] else ""
    checks.append(
        facts.check(
            "redis-ping",
            "pass" if ping["ok"] else "fail",
            f"PING {where}{auth} (from the {target['source']}) -> "
            + ("PONG" if ping["ok"] else str(ping["error"])),
            {
                "host": target["host"],
                "port": target["port"],
                "from": target["source"],
                "auth": bool(target["password"]),
                "reply": ping["reply"],
                "error": ping["error"],
                "ms": ping["ms"],
            },
            fix,
        )
    )
    listening, error = facts.listening
    public = [a for a in listening or [] if not facts.is_loopback(a)]
    uncovered = [a for a in facts.resolved if not facts.covered(a, listening or [])]
    ok = bool(listening) and not public and not (facts.resolved and facts.resolved[0] in uncovered)
    checks.append(
        facts.check(
            "redis-loopback-only",
            "pass" if ok else "fail",
            f"port {target['port']} listens on {', '.join(listening or []) or 'nothing'}"
            + (f"; {target['host']} -> {', '.join(facts.resolved)}" if facts.resolved else ""),
            {
                "listening": listening,
                "not_loopback": public,
                "resolves_to": facts.resolved,
                "not_listened": uncovered,
                "error": error,
            },
            facts.fix("serverfix.redis", "serverfix:redis:bind"),
        )
    )
    policy, error = facts.eviction_policy
    wanted = cfg["maxmemory_policy"]
    checks.append(
        facts.check(
            "redis-eviction-policy",
            "pass" if policy == wanted else "fail",
            f"maxmemory-policy {policy or '?'} (wanted {wanted})",
            {"maxmemory_policy": policy, "wanted": wanted, "error": error},
            facts.fix("serverfix.redis", "serverfix:redis:maxmemory_policy"),
        )
    )
    return checks


def _verify_env(facts):
    env, error = facts.env
    fix = facts.fix("serverfix.env", "serverfix:queue")
    if env is None:
        env_check = facts.check(
            "env-keys", "fail", f".env not readable: {error}", {"error": error}, fix
        )
    else:
        missing, different = facts.env_differences()
        ok = not missing and not different
        show = facts.utils["serverfix_mask.value"]  # the one masking rule
        shown = {
            key: show(key, value, None, facts.listed_secret_keys)
            for key, value in facts.wanted.items()
        }
        env_check = facts.check(
            "env-keys",
            "pass" if ok else "fail",
            f"{len(facts.wanted) - len(missing) - len(different)}/{len(facts.wanted)} keys as the "
            "pillar says"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; different {', '.join(different)}" if different else ""),
            {
                "file": facts.cfg["dotenv"]["file"],
                "wanted": shown,
                "missing": missing,
                "different": different,
            },
            fix,
        )
    shadowed = facts.shadowed()
    mode = facts.cfg["backend"]["shadowed_env"]
    shadow_check = facts.check(
        "env-not-shadowed",
        ("fail" if mode == "fail" else "warn") if shadowed else "pass",
        (
            f"pm2's saved env of {facts.backend_name} overrides {', '.join(shadowed)}"
            if shadowed
            else f"no managed key is overridden by pm2's saved env of {facts.backend_name}"
        ),
        {"keys": shadowed, "shadowed_env": mode},
        facts.fix("serverfix.backend", "serverfix:backend:shadowed_env") if shadowed else None,
    )
    return [env_check, shadow_check]


def _verify_swap(facts):
    swap = facts.cfg["swap"]
    if not swap["enabled"]:
        return [
            facts.check("swap", "skip", "serverfix:swap:enabled is false", {}),
            facts.check("sysctl", "skip", "serverfix:swap:enabled is false", {}),
        ]
    status, error = facts.swapfile
    status = status or {}
    wanted = facts.utils["serverfix_size.parse_size"](swap["size"])
    size = int(status.get("size_bytes") or 0)  # the file's size; /proc/swaps shows one page less
    active = bool(status.get("active"))
    ok = active and size >= wanted
    swap_check = facts.check(
        "swap",
        "pass" if ok else "fail",
        f"{swap['file']}: {'active' if active else 'not active'}, {facts.mb(size)} MB (wanted "
        f"{facts.mb(wanted)} MB)" + (f" ({error})" if error else ""),
        {
            "file": swap["file"],
            "active": active,
            "size_mb": facts.mb(size),
            "wanted_mb": facts.mb(wanted),
            "active_size_mb": facts.mb(status.get("active_size_bytes") or 0),
            "error": error,
        },
        facts.fix("serverfix.swap", "serverfix:swap"),
    )
    differ = [k for k, v in facts.sysctl.items() if v["current"] != v["wanted"]]
    sysctl_check = facts.check(
        "sysctl",
        "fail" if differ else "pass",
        ", ".join(
            f"{k}={v['current']}" + (f" (wanted {v['wanted']})" if k in differ else "")
            for k, v in facts.sysctl.items()
        ),
        facts.sysctl,
        facts.fix("serverfix.swap", "serverfix:swap:swappiness"),
    )
    return [swap_check, sysctl_check]


def _verify_pm2(facts):
    procs, error = facts.pm2
    backend = facts.backend_name
    if procs is None:
        return [
            facts.check(
                cid,
                "fail",
                f"pm2's list cannot be read: {error}",
                {"error": error},
                facts.fix(None, "serverfix:pm2:bin"),
            )
            for cid in ("pm2-online", "pm2-removed", "backend-ready")
        ]
    offline = {p["name"]: p.get("status") for p in procs if p.get("status") != "online"}
    checks = [
        facts.check(
            "pm2-online",
            "fail" if offline or facts.backend is None else "pass",
            (
                f"not online: {', '.join(f'{n} ({s})' for n, s in offline.items())}"
                if offline
                else f"{len(procs)} app(s) online"
            )
            + ("" if facts.backend else f"; {backend} is not in the list"),
            {
                "apps": {p["name"]: p.get("status") for p in procs},
                "restarts": {p["name"]: p.get("restart_time") for p in procs},
            },
            facts.fix("serverfix.backend", "serverfix:backend"),
        )
    ]
    saved, saved_error = facts.saved
    unwanted = facts.cfg["remove_processes"]
    running = sorted({p["name"] for p in procs} & set(unwanted))
    in_dump = sorted(set(saved or []) & set(unwanted))
    ok = not running and not in_dump and saved_error is None
    checks.append(
        facts.check(
            "pm2-removed",
            "pass" if ok else "fail",
            (
                f"{', '.join(unwanted)} absent from pm2's list and saved dump"
                if ok
                else f"still in the list: {', '.join(running) or '-'}; "
                f"in the saved dump: {', '.join(in_dump) or '-'}"
                + (f"; dump unreadable: {saved_error}" if saved_error else "")
            ),
            {
                "remove": unwanted,
                "in_list": running,
                "in_saved_dump": in_dump,
                "error": saved_error,
            },
            facts.fix("serverfix.prisma_studio", "serverfix:remove_processes"),
        )
    )
    checks.append(_verify_backend_ready(facts))
    return checks


def _verify_backend_ready(facts):
    backend = facts.backend_name
    patterns = facts.cfg["backend"]["ready_patterns"]
    error = facts.logs[1]
    found = facts.log_state["ready"]
    symptoms = [s["symptom"]["pattern"] for s in facts.log_state["symptoms"]]
    ok = (
        facts.backend is not None
        and all(found.values())
        and not symptoms
        and not facts.restart_pending
    )
    status = "pass"
    if not ok:
        # without a restart (the default) the backend keeps its old settings: say so, don't fail
        status = "fail" if facts.cfg["backend"]["restart"] or facts.backend is None else "warn"
    missing = [p for p, hit in found.items() if not hit]
    if ok:
        title = f"{backend} logged {len(patterns)} ready line(s) since its start"
    elif facts.restart_pending:
        title = f"{backend} started before the .env changed: it still runs with the old settings"
    elif symptoms:
        shown = ", ".join(repr(s) for s in symptoms)
        title = f"{backend}'s log shows {shown} not followed by the ready lines"
    else:
        title = (
            f"{backend} has not logged {', '.join(repr(p) for p in missing)} since its start"
            + (f" ({error})" if error else "")
        )
    return facts.check(
        "backend-ready",
        status,
        title,
        {
            "ready_lines": found,
            "symptoms": symptoms,
            "restart_pending": facts.restart_pending,
            "restart_allowed": facts.cfg["backend"]["restart"],
            "error": error,
        },
        facts.fix(
            "serverfix.backend",
            "serverfix:backend:restart",
            f"restart {backend} after consultation (runbook Phase 5)",
        ),
    )


def _probe(url, count, limit_ms):
    """Time up to ``count`` GETs of ``url`` within PROBE_BUDGET seconds (stops early once the median
    is decided or the next request would overrun); proxies are bypassed: the URL is local."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    times, errors = [], []
    begin = time.perf_counter()
    for _ in range(count):
        spent = time.perf_counter() - begin
        if (
            spent + max(times, default=0) / 1000 > PROBE_BUDGET
            or sum(t > limit_ms for t in times) > count // 2
        ):
            break
        start = time.perf_counter()
        try:
            with opener.open(
                url, timeout=max(0.05, min(5 * limit_ms / 1000, PROBE_BUDGET - spent))
            ) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            errors.append(f"HTTP {exc.code}")
        except (OSError, ValueError) as exc:
            errors.append(str(getattr(exc, "reason", exc)))
            break
        times.append(round((time.perf_counter() - start) * 1000, 1))
    return times, errors


def _verify_probe(facts):
    probe = facts.cfg["verify"]
    url = probe["url"]
    if not url:
        return facts.check("http-probe", "skip", "no serverfix:verify:url set", {})
    count, limit = int(probe["requests"]), int(probe["limit_ms"])
    times, errors = _probe(url, count, limit)
    median = round(statistics.median(times), 1) if times else None
    ok = bool(times) and not errors and median <= limit
    return facts.check(
        "http-probe",
        "pass" if ok else "fail",
        f"{len(times)}/{count} GET {url}: median {median} ms (limit {limit} ms)"
        + (f"; errors: {', '.join(sorted(set(errors)))}" if errors else ""),
        {
            "url": url,
            "requests": len(times),
            "wanted_requests": count,
            "median_ms": median,
            "max_ms": max(times) if times else None,
            "limit_ms": limit,
            "times_ms": times,
            "errors": errors,
        },
        facts.fix(
            "serverfix.backend", "serverfix:verify:url", "runbook: < 100 ms instead of 2-6 s"
        ),
    )


def verify(facts):
    """Every check of one run, always all of them, in ``VERIFY_CHECKS`` order."""
    checks = _verify_redis(facts) + _verify_env(facts) + _verify_swap(facts) + _verify_pm2(facts)
    checks += facts.utils["serverfix_pm2boot.checks"](facts)  # pm2 at boot
    checks += facts.utils["serverfix_redisreport.checks"](facts)  # Redis memory safety
    memory = facts.memory
    checks.append(
        facts.check(
            "memory",
            "info",
            f"RAM {memory['total_mb']} MB, {memory['available_mb']} MB available "
            f"({memory['used_percent']} % used)",
            memory,
        )
    )
    checks.append(_verify_probe(facts))
    checks.sort(key=lambda c: VERIFY_CHECKS.index(c["id"]))
    return checks
