"""
pm2 at boot and pm2's logs, for ``serverfix.diagnose`` and ``serverfix.verify``: the boot unit
``pm2-<user>.service`` (``pm2_startup.status``), the backend in the saved ``dump.pm2`` (names
only: the dump's environments hold secrets and are never read here), and the size of pm2's log
files with whether a rotation is in place (pm2-logrotate, or a rule in /etc/logrotate.d).
Read-only. Reached as ``__utils__["serverfix_pm2boot.<name>"]``; stdlib and salt only.
"""

import glob
import json
import os

LOGROTATE_DIR = "/etc/logrotate.d"
LOGROTATE_MODULE = "pm2-logrotate"
BOOT_CHECKS = ("pm2-boot", "pm2-saved")


def _boot(facts):
    """``(status, error)`` of the boot unit for the configured pm2 user and PM2_HOME."""
    pm2 = facts.cfg["pm2"]
    root = facts.paths["systemd_root"]
    return facts.call("pm2_startup.status", pm2["user"], pm2["home"], root=root)


def _startup_fix(facts):
    pm2 = facts.cfg["pm2"]
    home = os.path.dirname(os.path.normpath(pm2["home"]))
    return facts.fix(
        "serverfix.backend",
        "serverfix:pm2:startup",
        f"pm2 startup systemd -u {pm2['user']} --hp {home} (or serverfix:pm2:startup: true)",
    )


def _save_fix(facts):
    return facts.fix(
        "serverfix.backend",
        "serverfix:pm2:startup",
        f"pm2 save once {facts.backend_name} is online (or serverfix:pm2:startup: true)",
    )


def _in_dump(facts):
    saved, error = facts.saved
    return facts.backend_name in (saved or []), error


def findings(facts):
    """``pm2-boot-unit`` (the unit missing, disabled or for another user/PM2_HOME) and
    ``backend-not-saved`` (the backend not in dump.pm2): warnings with serverfix:pm2:startup
    true, info (report only) while it is false."""
    severity = "warning" if facts.cfg["pm2"].get("startup") else "info"
    found = []
    boot, error = _boot(facts)
    if boot is None or not boot["ok"]:
        problems = [error] if boot is None else boot["problems"]
        found.append(
            facts.finding(
                "pm2-boot-unit",
                severity,
                "pm2 does not start at boot: " + "; ".join(problems),
                {"boot": boot, "error": error} if boot is None else boot,
                _startup_fix(facts),
            )
        )
    if facts.pm2[0] is not None:  # pm2 unreadable: pm2-unavailable says so already
        in_dump, dump_error = _in_dump(facts)
        if not in_dump:
            found.append(
                facts.finding(
                    "backend-not-saved",
                    severity,
                    f"{facts.backend_name} is not in pm2's saved dump.pm2: it does not come "
                    "back after a reboot",
                    {"saved": sorted(facts.saved[0] or []), "error": dump_error},
                    _save_fix(facts),
                )
            )
    return found


def checks(facts):
    """``pm2-boot`` and ``pm2-saved``: pass, else fail with serverfix:pm2:startup true and warn
    while it is false (report only: the run does not fail on it)."""
    bad = "fail" if facts.cfg["pm2"].get("startup") else "warn"
    boot, error = _boot(facts)
    ok = boot is not None and boot["ok"]
    result = [
        facts.check(
            "pm2-boot",
            "pass" if ok else bad,
            f"{boot['unit']} enabled for {facts.cfg['pm2']['home']}"
            if ok
            else "pm2 does not start at boot: "
            + "; ".join([error] if boot is None else boot["problems"]),
            boot if boot is not None else {"error": error},
            _startup_fix(facts),
        )
    ]
    in_dump, dump_error = _in_dump(facts)
    result.append(
        facts.check(
            "pm2-saved",
            "pass" if in_dump else bad,
            f"{facts.backend_name} is in dump.pm2 (pm2 resurrect starts it at boot)"
            if in_dump
            else f"{facts.backend_name} is not in dump.pm2"
            + (f" ({dump_error})" if dump_error else ""),
            {"saved": sorted(facts.saved[0] or []), "error": dump_error},
            _save_fix(facts),
        )
    )
    return result


# ---------------------------------------------------------------- pm2's logs


def rotation(pm2_home, names=(), logrotate_dir=LOGROTATE_DIR):
    """How pm2's logs are rotated: the pm2-logrotate module (in pm2's list or its
    module_conf.json) and the logrotate rules naming the PM2_HOME or its logs directory."""
    module = LOGROTATE_MODULE in names
    try:
        with open(os.path.join(pm2_home, "module_conf.json"), encoding="utf-8") as handle:
            conf = json.load(handle)
        module = module or (isinstance(conf, dict) and LOGROTATE_MODULE in conf)
    except (OSError, ValueError):
        pass
    home = os.path.normpath(pm2_home)
    rules = []
    for path in sorted(glob.glob(os.path.join(logrotate_dir, "*"))):
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                text = handle.read()
        except OSError:
            continue
        if home in text:
            rules.append(path)
    return {"pm2_logrotate": module, "logrotate_rules": rules}


def log_files(pm2_home, procs):
    """pm2's log files: ``$PM2_HOME/pm2.log``, ``$PM2_HOME/logs/*.log`` and every app's out and
    error log from pm2's list, each once, as ``{path: bytes}`` (unreadable ones left out)."""
    paths = [os.path.join(pm2_home, "pm2.log")]
    paths += sorted(glob.glob(os.path.join(glob.escape(pm2_home), "logs", "*.log")))
    for proc in procs or []:
        paths += [proc.get("out_log") or "", proc.get("err_log") or ""]
    sizes = {}
    for path in paths:
        if not path or path in sizes or path == "/dev/null":
            continue
        try:
            sizes[path] = os.stat(path).st_size
        except OSError:
            continue
    return sizes


def log_findings(facts, logrotate_dir=LOGROTATE_DIR):
    """``pm2-logs-large`` (warning: a log over serverfix:pm2:log_warn_size) and
    ``pm2-logs-unrotated`` (info: no rotation in place); no change."""
    pm2 = facts.cfg["pm2"]
    procs = facts.pm2[0]
    limit = facts.utils["serverfix_size.parse_size"](str(pm2.get("log_warn_size") or "100M"))
    sizes = log_files(pm2["home"], procs)
    found_rotation = rotation(pm2["home"], {p.get("name") for p in procs or []}, logrotate_dir)
    rotated = found_rotation["pm2_logrotate"] or bool(found_rotation["logrotate_rules"])
    large = {path: facts.mb(size) for path, size in sizes.items() if size > limit}
    evidence = {
        "total_mb": facts.mb(sum(sizes.values())),
        "files": len(sizes),
        "rotation": found_rotation,
    }
    hint = (
        f"pm2 install {LOGROTATE_MODULE} (as the pm2 user), or a logrotate rule for "
        f"{os.path.join(pm2['home'], 'logs')}/*.log with copytruncate"
    )
    found = []
    if large:
        found.append(
            facts.finding(
                "pm2-logs-large",
                "warning",
                f"{len(large)} pm2 log file(s) over {pm2.get('log_warn_size')}: "
                + ", ".join(f"{path} ({size} MB)" for path, size in sorted(large.items()))
                + ("" if rotated else "; no rotation in place"),
                dict(evidence, large_mb=large, warn_size=pm2.get("log_warn_size")),
                facts.fix(
                    None,
                    "serverfix:pm2:log_warn_size",
                    "pm2 flush <app> once read; "
                    + (hint if not rotated else "check why the rotation does not keep up"),
                ),
            )
        )
    if not rotated:
        found.append(
            facts.finding(
                "pm2-logs-unrotated",
                "info",
                f"pm2's logs are not rotated ({evidence['total_mb']} MB now): they grow "
                "without bound",
                evidence,
                facts.fix(None, "serverfix:pm2:log_warn_size", hint),
            )
        )
    return found
