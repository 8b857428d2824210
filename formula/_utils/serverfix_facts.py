"""
Read-once facts about the host for ``serverfix.diagnose`` and ``serverfix.verify``: the .env (as
npm dotenv reads it), Redis over its own protocol, the service manager, pm2's list, dump and
logs (one ``pm2 jlist`` per run), memory, swap and sysctl. Read-only.

Utils get no ``__salt__`` and no ``__utils__``: the module passes its own to :func:`gather`.
Every call goes through :func:`call`, so a module that is not loaded or a tool that fails becomes
evidence instead of an exception. Reached as ``__utils__["serverfix_facts.<name>"]``; stdlib and
salt only.
"""

import functools
import ipaddress
import os
import socket
import time

SECRET = "<secret>"
REDIS_TIMEOUT = 1.0  # seconds per Redis connection: loopback answers in milliseconds
LOG_LINES = 200
SYSCTL_KEYS = {
    "vm.swappiness": "swappiness",
    "vm.vfs_cache_pressure": "vfs_cache_pressure",
    "vm.overcommit_memory": "overcommit_memory",  # '' or null in the pillar: left alone
}
# where the Redis memory facts read the host (serverfix_redisreport); tests pass their own
# the host files diagnose/verify read besides the settings' own; tests point them at copies
HOST_PATHS = {
    "meminfo": "/proc/meminfo",
    "cgroup_root": "/sys/fs/cgroup",
    "thp_enabled": "/sys/kernel/mm/transparent_hugepage/enabled",
    "systemd_root": "/",  # where systemd's unit files are read (pm2's boot unit)
}

# The runbook's troubleshooting symptoms as the backend logs them, the findings that cause them
# and the runbook's fix for each.
LOG_SYMPTOMS = (
    {
        "id": "econnrefused",
        "pattern": "connect ECONNREFUSED",
        "causes": ("redis-not-running", "redis-host-mismatch"),
        "fix": "serverfix.redis: start Redis where REDIS_HOST/REDIS_PORT point, then restart "
        "the backend",
    },
    {
        "id": "queue-disabled",
        "pattern": "Queue-System ist deaktiviert",
        "causes": ("env-queue-config",),
        "fix": "serverfix.env: QUEUE_ENABLED=true in the .env, then restart the backend",
    },
    {
        "id": "workers-not-started",
        "pattern": "Redis nicht verfügbar - Workers werden nicht gestartet",
        "causes": ("redis-not-running", "redis-host-mismatch", "redis-auth-failed"),
        "fix": "serverfix.redis: make Redis answer PING, then restart the backend",
    },
)


def gather(  # pylint: disable=too-many-arguments
    cfg, salt, utils, proc_swaps="/proc/swaps", source="config", paths=None, reuse_pm2_list=False
):
    """The :class:`Facts` of this host for the merged settings ``cfg``, read lazily; ``salt`` and
    ``utils`` are the calling module's ``__salt__``/``__utils__`` (the loader hands out functions,
    not classes); ``paths`` overrides :data:`HOST_PATHS`; ``reuse_pm2_list``: take the pm2 list
    this state run has read already."""
    return Facts(
        cfg,
        salt,
        utils,
        proc_swaps=proc_swaps,
        source=source,
        paths=paths,
        reuse_pm2_list=reuse_pm2_list,
    )


def call(salt, function, *args, **kwargs):
    """``(result, None)`` or ``(None, reason)`` of ``salt[function](...)``: a missing module or a
    failing tool becomes evidence, since diagnose and verify report instead of raising."""
    if function not in salt:
        module = function.split(".", 1)[0]
        return None, (
            f"the {module} execution module is not available here "
            "(it ships with this formula: run saltutil.sync_modules)"
        )
    try:
        return salt[function](*args, **kwargs), None
    except OSError as exc:  # "Connection refused", not "[Errno 111] Connection refused"
        return None, f"{function}: {exc.strerror or exc}"
    except Exception as exc:  # pylint: disable=broad-except  # a report names it, never raises
        return None, f"{function}: {exc}"


def fix(state=None, pillar=None, hint=""):
    """The ``fix`` of a finding or check: the SLS and the pillar key that change it, and a hint."""
    return {"state": state, "pillar": pillar, "hint": hint}


def _entry(ident, level, value, title, evidence, fix):  # pylint: disable=redefined-outer-name
    return {
        "id": ident,
        level: value,
        "title": title,
        "evidence": evidence,
        "fix": fix or {"state": None, "pillar": None, "hint": ""},
    }


def finding(fid, severity, title, evidence, fix=None):  # pylint: disable=redefined-outer-name
    """A diagnose finding: the one shape of ``serverfix.diagnose``'s ``findings`` entries."""
    return _entry(fid, "severity", severity, title, evidence, fix)


def check(cid, status, title, evidence, fix=None):  # pylint: disable=redefined-outer-name
    """A verify check: the one shape of ``serverfix.verify``'s ``checks`` entries."""
    return _entry(cid, "status", status, title, evidence, fix)


def mb(num_bytes):
    """Bytes as MB with one decimal."""
    return round(num_bytes / (1 << 20), 1)


def resolve_ordered(host, port):
    """The addresses ``host`` resolves to, in the resolver's order (the order a Node client
    tries)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return []
    seen = []
    for info in infos:
        if info[4][0] not in seen:
            seen.append(info[4][0])
    return seen


def is_loopback(address):
    """True for an address in 127.0.0.0/8 or ``::1`` (a ``%zone`` suffix is ignored)."""
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


def covered(address, listening):
    """True when a listener on one of ``listening`` accepts connections to ``address``."""
    if address in listening or "::" in listening:
        return True
    return "0.0.0.0" in listening and ":" not in address


class Facts:
    """Everything diagnose and verify look at, each read at most once per run."""

    # the evidence helpers, for the rules in serverfix_findings / serverfix_checks
    fix = staticmethod(fix)
    finding = staticmethod(finding)
    check = staticmethod(check)
    mb = staticmethod(mb)
    is_loopback = staticmethod(is_loopback)
    covered = staticmethod(covered)

    def __init__(  # pylint: disable=too-many-arguments
        self,
        cfg,
        salt,
        utils,
        proc_swaps="/proc/swaps",
        source="config",
        paths=None,
        reuse_pm2_list=False,
    ):
        self.cfg = cfg
        self.paths = dict(HOST_PATHS, **{k: v for k, v in (paths or {}).items() if v})
        self.reuse_pm2_list = reuse_pm2_list
        # the calling module's __salt__ and __utils__ (utils get none of their own)
        self.salt = salt
        self.utils = utils
        self.source = source
        self.proc_swaps = proc_swaps
        self.wanted = utils["serverfix_settings.env_values"](
            cfg, utils["serverfix_defaults.managed_env"]()
        )
        listed = {"REDIS_PASSWORD"} | set(cfg["dotenv"]["secret_keys"] or [])
        self.listed_secret_keys = sorted(listed)
        # the one masking rule (serverfix_mask): every wanted key but the formula's non-secret ones
        public = utils["serverfix_mask.is_public"]
        self.secret_keys = listed | {key for key in self.wanted if not public(key, None, listed)}
        pm2 = cfg["pm2"]
        self.pm2_args = {"user": pm2["user"], "pm2_home": pm2["home"]}
        self.backend_name = cfg["backend"]["name"]

    def call(self, function, *args, **kwargs):
        """:func:`call` with this run's ``__salt__``."""
        return call(self.salt, function, *args, **kwargs)

    @functools.cached_property
    def env(self):
        """``(mapping, error)`` of the .env as npm dotenv reads it."""
        path = self.cfg["dotenv"]["file"]
        if not os.path.exists(path):
            return None, f"{path} does not exist (serverfix:dotenv:file)"
        return self.call("dotenv.read", path)

    @functools.cached_property
    def env_mtime(self):
        """The .env's modification time, ``None`` when it cannot be read."""
        try:
            return os.stat(self.cfg["dotenv"]["file"]).st_mtime
        except OSError:
            return None

    def secrets(self):
        """Every secret value known to this run, for the final scrub."""
        env = self.env[0] or {}
        values = [env.get(key) for key in self.secret_keys] + [self.cfg["redis"]["password"]]
        values += [self.wanted.get(key) for key in self.secret_keys]
        return {str(v) for v in values if v not in (None, "") and len(str(v)) >= 3}

    @functools.cached_property
    def redis_target(self):
        """Host, port and password the backend uses: the .env's REDIS_* keys; before Phase 2 wrote
        them, the pillar's (what Phase 2 will write)."""
        env = self.env[0] or {}
        redis = self.cfg["redis"]
        from_env = "REDIS_HOST" in env or "REDIS_PORT" in env
        port = env.get("REDIS_PORT", "")
        return {
            "host": env.get("REDIS_HOST") or str(redis["host"]),
            "port": int(port)
            if str(port).isdigit() and 0 < int(port) < 65536
            else int(redis["port"]),
            # without REDIS_PASSWORD in its .env the backend sends no password
            "password": env.get("REDIS_PASSWORD", "") if from_env else str(redis["password"] or ""),
            "source": ".env" if from_env else "pillar",
        }

    @functools.cached_property
    def listening(self):
        """``(addresses, error)`` Redis listens on at the backend's port."""
        return self.call("redis_server.listening_addresses", self.redis_target["port"])

    @functools.cached_property
    def resolved(self):
        """What REDIS_HOST resolves to, in the order a client tries."""
        return resolve_ordered(self.redis_target["host"], self.redis_target["port"])

    def _redis(self, *args):
        target = self.redis_target
        return self.call(
            "redis_server.command",
            *args,
            host=target["host"],
            port=target["port"],
            password=target["password"],
            timeout=REDIS_TIMEOUT,
        )

    @functools.cached_property
    def ping(self):
        """``{"ok", "reply", "error", "ms"}`` of one PING over the socket (AUTH first when a
        password is set)."""
        start = time.perf_counter()
        reply, error = self._redis("PING")
        elapsed = round((time.perf_counter() - start) * 1000, 1)
        if error is None and isinstance(reply, str) and reply != "PONG":
            error = f"Redis answered {reply.split()[0] if reply.split() else reply!r}"
        if (
            error and ": " in error
        ):  # "redis_server.command: [Errno 111] Connection refused" -> the reason
            error = error.split(": ", 1)[1]
        return {
            "ok": error is None and reply == "PONG",
            "reply": reply if error is None else None,
            "error": error,
            "ms": elapsed,
        }

    @functools.cached_property
    def eviction_policy(self):
        """``(policy, error)``: what the running Redis says, else its config file (CONFIG may be
        renamed)."""
        if not self.ping["ok"]:
            return None, "Redis does not answer"
        reply, error = self._redis("CONFIG", "GET", "maxmemory-policy")
        if error is None and isinstance(reply, list) and len(reply) == 2:
            return reply[1], None
        conf, conf_error = self.call("redis_server.config_get", self.cfg["redis"]["config"])
        if conf:  # Redis' default when the file does not set it
            return conf.get("maxmemory-policy", "noeviction"), None
        return None, f"CONFIG GET: {error or str(reply)[:60]!r}; {conf_error}"

    @functools.cached_property
    def package_installed(self):
        """Whether the Redis package is installed (``None``: unknown)."""
        version, error = self.call("pkg.version", self.cfg["redis"]["pkg"])
        return None if error else bool(version)

    @functools.cached_property
    def service_running(self):
        """``(True/False/None, error)`` from the service manager (systemctl is-active, ...)."""
        running, error = self.call("service.status", self.cfg["redis"]["service"])
        return (None if error else bool(running)), error

    @functools.cached_property
    def service_enabled(self):
        """``(enabled, error)`` of the Redis service."""
        enabled, error = self.call("service.enabled", self.cfg["redis"]["service"])
        return (None if error else bool(enabled)), error

    @functools.cached_property
    def pm2(self):
        """``(processes, error)``: the one cached ``pm2 jlist`` of this run."""
        # a state run's context is its own: the verify state reuses the list when the run changed
        # nothing in pm2; a lone verify call may share a long-lived context, so it asks pm2
        return self.call(
            "pm2.list",
            pm2_bin=self.cfg["pm2"]["bin"],
            refresh="after_change" if self.reuse_pm2_list else True,
            **self.pm2_args,
        )

    @functools.cached_property
    def saved(self):
        """``(names, error)`` of the apps in pm2's saved dump."""
        return self.call("pm2.saved_names", **self.pm2_args)

    @functools.cached_property
    def backend(self):
        """The backend's pm2 process, ``None`` when pm2 does not list it."""
        return next((p for p in self.pm2[0] or [] if p.get("name") == self.backend_name), None)

    @functools.cached_property
    def started(self):
        """The backend's last start (epoch seconds), or None."""
        uptime = (self.backend or {}).get("pm_uptime")
        return uptime / 1000 if uptime else None

    @functools.cached_property
    def logs(self):
        """``(files, error)``: per log file of the backend its path, lines and whether it was
        written since the backend's last start (lines carry no time: a file untouched since the
        start holds only older lines)."""
        if self.backend is None:
            return [], f"{self.backend_name} is not in pm2's list"
        paths, error = self.call(
            "pm2.log_paths", self.backend_name, pm2_bin=self.cfg["pm2"]["bin"], **self.pm2_args
        )
        files = []
        for path in paths or []:
            try:
                modified = os.stat(path).st_mtime
            except OSError:
                continue
            files.append(
                {
                    "path": path,
                    "lines": self.utils["serverfix_files.tail_lines"](path, LOG_LINES),
                    "since_start": self.started is not None and modified >= self.started,
                }
            )
        return files, error

    def mask_secrets(self):
        """What pm2.mask replaces in log lines: the Redis password, every ``dotenv:extra`` value
        (any may be a secret) and the secret .env values; pm2.mask adds pm2's app env secrets."""
        extra = self.cfg["dotenv"]["extra"] or {}
        values = [self.cfg["redis"]["password"], *extra.values(), *self.secrets()]
        # and every value of the .env the formula did not define (serverfix_mask.hidden_values)
        hidden = self.utils["serverfix_mask.hidden_values"](
            self.env[0] or {}, None, self.listed_secret_keys
        )
        return sorted({str(v) for v in [*values, *hidden] if v not in (None, "")})

    def masked(self, line):
        """``line`` with every secret replaced (``pm2.mask``)."""
        masked, _ = self.call(
            "pm2.mask",
            line,
            secrets=self.mask_secrets(),
            user=self.pm2_args["user"],
            pm2_home=self.pm2_args["pm2_home"],
        )
        return (masked if masked is not None else line).strip()[:200]

    @functools.cached_property
    def log_state(self):
        """Ready lines and troubleshooting symptoms written since the backend's last start. A
        symptom counts unless every ready line follows it in the same file (each file is in time
        order): a reconnect ("Redis-Verbindung hergestellt") does not start the workers that were
        skipped."""
        ready = self.cfg["backend"]["ready_patterns"]
        ready_seen = {pattern: False for pattern in ready}
        symptoms = {}
        for log_file in self.logs[0]:
            if not log_file["since_start"]:
                continue
            lines = log_file["lines"]
            last = {
                p: max((i for i, line in enumerate(lines) if p in line), default=-1) for p in ready
            }
            all_ready_after = min(last.values(), default=-1)
            for pattern in ready:
                ready_seen[pattern] |= last[pattern] >= 0
            for symptom in LOG_SYMPTOMS:
                hits = [
                    i
                    for i, line in enumerate(lines)
                    if symptom["pattern"] in line and i > all_ready_after
                ]
                if hits:
                    hit = symptoms.setdefault(
                        symptom["id"], {"symptom": symptom, "count": 0, "line": ""}
                    )
                    hit["count"] += len(hits)
                    hit["line"] = self.masked(lines[hits[-1]])
        return {
            "ready": ready_seen,
            "symptoms": [symptoms[s["id"]] for s in LOG_SYMPTOMS if s["id"] in symptoms],
        }

    @functools.cached_property
    def restart_pending(self):
        """True when the .env changed after the backend started (the running backend has the
        old one)."""
        if self.started is None or self.env_mtime is None:
            return False
        return self.env_mtime > self.started

    @functools.cached_property
    def memory(self):
        """RAM, available memory and the pm2 apps' use, in MB and percent."""
        info = self.utils["serverfix_files.meminfo"]()
        total = info.get("MemTotal", 0)
        available = info.get("MemAvailable", 0)
        processes = {}
        for proc in self.pm2[0] or []:
            processes[proc["name"]] = {
                "status": proc.get("status"),
                "memory_mb": mb(proc.get("memory") or 0),
                "percent": round(100 * (proc.get("memory") or 0) / total, 1) if total else None,
            }
        return {
            "total_mb": mb(total),
            "available_mb": mb(available),
            "used_percent": round(100 * (total - available) / total, 1) if total else None,
            "available_percent": round(100 * available / total, 1) if total else None,
            "processes": processes,
        }

    @functools.cached_property
    def swaps(self):
        """``(active swap areas, error)`` from ``proc_swaps`` (a file deleted while in use is not
        swap we own)."""
        swaps, error = self.call("swapfile.active_swaps", proc_swaps=self.proc_swaps)
        return [s for s in swaps or [] if not s["deleted"]], error

    @functools.cached_property
    def swapfile(self):
        """``(swapfile.status of the configured file, error)``."""
        return self.call("swapfile.status", self.cfg["swap"]["file"])

    @functools.cached_property
    def sysctl(self):
        """``{key: {"current", "wanted"}}`` of the memory tuning sysctls."""
        swap = self.cfg["swap"]
        runtime, _ = self.call("sysctl_persist.runtime", list(SYSCTL_KEYS))
        current = {
            key: int(value) if value and value.lstrip("-").isdigit() else None
            for key, value in (runtime or {}).items()
        }
        return {
            key: {"current": current.get(key), "wanted": int(swap[name])}
            for key, name in SYSCTL_KEYS.items()
            if swap.get(name) not in ("", None)
        }

    @functools.cached_property
    def redis_memory(self):
        """Redis's maxmemory, THP and startup warnings (``serverfix_redisreport.RedisMemory``)."""
        return self.utils["serverfix_redisreport.memory"](self, self.paths)

    def env_differences(self):
        """``(missing keys, {key: {found, wanted}})`` of the wanted keys; secrets masked."""
        env = self.env[0] or {}
        missing, different = [], {}
        for key, want in self.wanted.items():
            if key not in env:
                missing.append(key)
            elif env[key] != want:
                show = self.utils["serverfix_mask.value"]
                listed = self.listed_secret_keys
                different[key] = {
                    "found": show(key, env[key], None, listed),
                    "wanted": show(key, want, None, listed),
                }
        return missing, different

    def shadowed(self):
        """Managed .env keys pm2 passes from its saved start-time environment (they win over the
        .env)."""
        if self.backend is None:
            return []
        return sorted(set(self.backend.get("env_keys") or []) & set(self.wanted))

    def settings_summary(self):
        """The settings a report shows (no secrets)."""
        return {
            "env_file": self.cfg["dotenv"]["file"],
            "backend": self.backend_name,
            "pm2_home": self.cfg["pm2"]["home"],
            "redis_port": self.redis_target["port"],
            "swap_file": self.cfg["swap"]["file"],
            "source": self.source,
        }


def scrub(data, secrets):
    """Replace every known secret value anywhere in ``data`` (a last line of defence)."""
    if not secrets:
        return data
    if isinstance(data, dict):
        return {key: scrub(value, secrets) for key, value in data.items()}
    if isinstance(data, list):
        return [scrub(value, secrets) for value in data]
    if isinstance(data, str):
        for secret in sorted(secrets, key=len, reverse=True):
            data = data.replace(secret, SECRET)
    return data
