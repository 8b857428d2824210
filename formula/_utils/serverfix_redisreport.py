"""
Redis memory safety in ``serverfix.diagnose`` and ``serverfix.verify``: the facts (Redis's
``maxmemory`` against the wanted one, transparent huge pages against Redis's ``disable-thp``,
Redis's startup warnings since its last start), the findings and the checks. The rules live in
``serverfix_redismem``; this file reads them through the run's :class:`Facts
<serverfix_facts.Facts>` (``facts.utils``, ``facts.call``). Reached as
``__utils__["serverfix_redisreport.<name>"]``.
"""

import functools

CHECK_IDS = ("redis-maxmemory", "redis-thp", "redis-warnings")
REDIS_TIMEOUT = 1.0
JOURNAL_LINES = 400
# Redis's disable-thp (6.2 and later) when redis.conf does not set it
DISABLE_THP_DEFAULT = "yes"


def _unquote(value):
    value = (value or "").strip()
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


class RedisMemory:
    """The Redis memory facts of one run, each read at most once. ``paths``: ``meminfo``,
    ``cgroup_root``, ``thp_enabled`` (tests point them at files of their own)."""

    def __init__(self, facts, paths):
        self.facts = facts
        self.mem = facts.utils  # serverfix_redismem.* through the caller's loader
        self.paths = paths

    def _rule(self, name, *args, **kwargs):
        return self.mem[f"serverfix_redismem.{name}"](*args, **kwargs)

    def _live(self, name):
        """``CONFIG GET name`` of the running Redis: the value, or ``None``."""
        if not self.facts.ping["ok"]:
            return None
        target = self.facts.redis_target
        reply, error = self.facts.call(
            "redis_server.command",
            "CONFIG",
            "GET",
            name,
            host=target["host"],
            port=target["port"],
            password=target["password"],
            timeout=REDIS_TIMEOUT,
        )
        if error is None and isinstance(reply, list) and len(reply) == 2:
            return reply[1]
        return None

    @functools.cached_property
    def conf(self):
        """redis.conf's directives (``{}`` when it cannot be read)."""
        conf, _ = self.facts.call("redis_server.config_get", self.facts.cfg["redis"]["config"])
        return conf or {}

    @functools.cached_property
    def maxmemory(self):
        """``{"current", "wanted", "wanted_value", "setting", "basis"}``: bytes Redis uses as
        maxmemory now (``None``: unknown) and wanted (``None``: left alone)."""
        redis = self.facts.cfg["redis"]
        wanted = self._rule(
            "resolve_maxmemory",
            redis["maxmemory"],
            service=redis["service"],
            meminfo=self.paths["meminfo"],
            cgroup_root=self.paths["cgroup_root"],
        )
        live = self._live("maxmemory")
        current = self._rule("memory_bytes", live) if live is not None else None
        return {
            "current": current,
            "current_text": None if current is None else self._rule("size_text", current) or "0",
            "wanted": wanted["bytes"],
            "wanted_value": wanted["value"],
            "setting": str(redis["maxmemory"]),
            "basis": wanted["basis"],
        }

    @functools.cached_property
    def thp(self):
        """``{"mode", "file", "disable_thp", "from", "covered"}``: THP's mode and whether Redis's
        own ``disable-thp`` switches it off for Redis (it only matters for ``always``)."""
        mode = self._rule("thp_mode", self.paths["thp_enabled"])
        live = self._live("disable-thp")
        if live is not None:
            disable, source = live, "running Redis"
        elif "disable-thp" in self.conf:
            disable, source = _unquote(self.conf["disable-thp"]), "redis.conf"
        else:
            disable, source = DISABLE_THP_DEFAULT, "Redis's default (6.2 and later)"
        return {
            "mode": mode,
            "file": self.paths["thp_enabled"],
            "disable_thp": disable,
            "from": source,
            "covered": mode != "always" or disable == "yes",
        }

    def _log_lines(self):
        """``(lines of Redis's log tail, where, error)``: redis.conf's ``logfile``, else the
        service's journal."""
        port = _unquote(self.conf.get("port", "6379"))
        if port != str(self.facts.redis_target["port"]):  # another Redis's log
            config = self.facts.cfg["redis"]["config"]
            return [], None, f"{config} is for port {port}, not the backend's Redis"
        logfile = _unquote(self.conf.get("logfile", ""))
        if logfile:
            return (
                self.facts.utils["serverfix_files.tail_lines"](logfile, JOURNAL_LINES),
                logfile,
                None,
            )
        service = self.facts.cfg["redis"]["service"]
        out, error = self.facts.call(
            "cmd.run_all",
            ["journalctl", "-u", service, "-n", str(JOURNAL_LINES), "-o", "cat", "--no-pager"],
            python_shell=False,
            ignore_retcode=True,
            output_loglevel="quiet",
        )
        if error or not isinstance(out, dict) or out.get("retcode"):
            return [], f"journalctl -u {service}", error or "journalctl failed"
        return out.get("stdout", "").splitlines(), f"journalctl -u {service}", None

    @functools.cached_property
    def warnings(self):
        """``{"source", "error", "items"}``: Redis's startup warnings since its last start
        (only while Redis answers: a stopped Redis's log is about an old run), every line
        through the one masking rule."""
        if not self.facts.ping["ok"]:
            return {"source": None, "error": "Redis does not answer", "items": []}
        lines, source, error = self._log_lines()
        secrets = self.facts.mask_secrets()
        text = self.facts.utils["serverfix_mask.text"]
        items = self._rule("startup_warnings", lines, mask=lambda line: text(line, secrets))
        overcommit = self.facts.sysctl.get("vm.overcommit_memory", {}).get("current")
        for item in items:  # fixed since Redis started: it goes at Redis's next start
            item["fixed_now"] = item["kind"] == "overcommit" and overcommit == 1
        return {"source": source, "error": error, "items": items}


def memory(facts, paths):
    """The :class:`RedisMemory` of one run."""
    return RedisMemory(facts, paths)


def _basis_text(item):
    basis = item["basis"]
    if not basis:
        return f"serverfix:redis:maxmemory {item['setting']}"
    limit = f", cgroup limit {basis['cgroup_limit'] >> 20} MB" if basis["cgroup_limit"] else ""
    return (
        f"auto: 1/8 of {basis['usable'] >> 20} MB (MemTotal {basis['mem_total'] >> 20} MB{limit})"
    )


def findings(facts):
    """The Redis memory safety findings (only while Redis answers: they are about the Redis
    that runs; ``redis-not-running`` covers the rest)."""
    if not facts.cfg["redis"]["enabled"] or not facts.ping["ok"]:
        return []
    mem = facts.redis_memory
    found = []
    item = mem.maxmemory
    if item["wanted"] is not None and item["current"] != item["wanted"]:
        now = "0 (no limit)" if item["current"] == 0 else item["current_text"]
        found.append(
            facts.finding(
                "redis-maxmemory",
                "warning",
                f"Redis maxmemory is {now}, not {item['wanted_value']} ({_basis_text(item)}): "
                "a full Redis should refuse writes (noeviction), not meet the OOM killer",
                item,
                facts.fix("serverfix.redis", "serverfix:redis:maxmemory"),
            )
        )
    thp = mem.thp
    if not thp["covered"]:
        found.append(
            facts.finding(
                "redis-thp",
                "warning",
                f"Transparent huge pages are [always] and Redis's disable-thp is "
                f"{thp['disable_thp']!r} ({thp['from']}): latency spikes and memory bloat",
                thp,
                facts.fix(
                    None,
                    None,
                    "`disable-thp yes` in redis.conf (Debian's default), or THP madvise: echo "
                    "madvise > /sys/kernel/mm/transparent_hugepage/enabled (and "
                    "transparent_hugepage=madvise on the kernel command line)",
                ),
            )
        )
    warnings = mem.warnings
    kinds = {}
    for item in warnings["items"]:
        kinds.setdefault(item["kind"], []).append(item)
    for kind, items in kinds.items():
        fixed = all(i["fixed_now"] for i in items)
        suffix = " (fixed since; the line goes at Redis's next start)" if fixed else ""
        found.append(
            facts.finding(
                "redis-warning" if kind == "other" else f"redis-warning-{kind}",
                "info" if fixed else "warning",
                items[0]["title"] + suffix,
                {"lines": [i["line"] for i in items], "log": warnings["source"]},
                items[0]["fix"],
            )
        )
    return found


def checks(facts):
    """``redis-maxmemory``, ``redis-thp`` and ``redis-warnings``, in that order."""
    if not facts.cfg["redis"]["enabled"]:
        return [
            facts.check(cid, "skip", "serverfix:redis:enabled is false", {}) for cid in CHECK_IDS
        ]
    if not facts.ping["ok"]:
        return [facts.check(cid, "skip", "Redis does not answer", {}) for cid in CHECK_IDS]
    mem = facts.redis_memory
    fix = facts.fix("serverfix.redis", "serverfix:redis:maxmemory")
    item = mem.maxmemory
    if item["wanted"] is None:
        mm_check = facts.check(
            "redis-maxmemory", "skip", "serverfix:redis:maxmemory '' leaves it alone", item
        )
    else:
        ok = item["current"] == item["wanted"]
        mm_check = facts.check(
            "redis-maxmemory",
            "pass" if ok else "fail",
            f"maxmemory {item['current_text']}"
            + ("" if ok else f" (wanted {item['wanted_value']}: {_basis_text(item)})"),
            item,
            fix,
        )
    thp = mem.thp
    thp_check = facts.check(  # the formula does not change THP: warn, not fail
        "redis-thp",
        "pass" if thp["covered"] else "warn",
        f"transparent huge pages [{thp['mode']}], disable-thp {thp['disable_thp']} ({thp['from']})",
        thp,
    )
    warnings = mem.warnings
    items = warnings["items"]
    # a warning whose cause is fixed since Redis started (overcommit set in Phase 4, after
    # Redis's start in Phase 1) passes: only its log line is left, until Redis's next start
    still = [i for i in items if not i["fixed_now"]]
    fixed_text = f", {len(items) - len(still)} fixed since" if len(still) < len(items) else ""
    warn_check = facts.check(  # no log to read (another Redis's config, no journal): skip
        "redis-warnings",
        "warn" if still else "skip" if warnings["error"] and not items else "pass",
        f"{len(items)} startup warning(s) from Redis since its last start{fixed_text}"
        + (f" ({warnings['error']})" if warnings["error"] else ""),
        {"lines": [i["line"] for i in items], "log": warnings["source"]},
        items[0]["fix"] if items else None,
    )
    return [mm_check, thp_check, warn_check]
