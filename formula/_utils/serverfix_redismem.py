"""
Redis memory safety: the ``maxmemory`` sizing rule (:func:`auto_maxmemory`, the one place it
lives), the RAM the host really has (:func:`host_memory`: the smaller of ``MemTotal`` and the
cgroup v2 limits above the Redis service), transparent huge pages (:func:`thp_mode`) and Redis's
own startup warnings (:func:`startup_warnings`). Every path is an argument, so tests point them at
files of their own. Read-only; stdlib only. Reached as ``__utils__["serverfix_redismem.<name>"]``.
"""

import os
import re

AUTO = "auto"
# maxmemory 'auto': 1/8 of the RAM the host really has, at least 64 MB, at most 1 GB. On the 4 GB
# server that also runs the Node backend this is 512 MB: a BullMQ queue of small jobs fits many
# times over, and a fork for an AOF rewrite or save can copy up to the same again, which still
# leaves the backend, the OS and the page cache well over 2 GB.
AUTO_DIVISOR = 8
AUTO_FLOOR = 64 << 20
AUTO_CEILING = 1 << 30
MEMINFO = "/proc/meminfo"
CGROUP_ROOT = "/sys/fs/cgroup"
THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"
START_MARKER = "Redis is starting"  # logged by every start: lines before it are older runs
LOG_LINES = 400
UNITS = {"": 1, "k": 1000, "kb": 1024, "m": 1000**2, "mb": 1 << 20, "g": 1000**3, "gb": 1 << 30}
MEMORY_RE = re.compile(r"^([0-9]+)([kmg]b?)?$", re.IGNORECASE)

# Redis's startup warnings it knows (substring of the line -> kind), each with its fix
WARNINGS = (
    {
        "kind": "overcommit",
        "match": "overcommit",
        "title": "Redis warns that memory overcommit is off (a fork for a save can fail)",
        "state": "serverfix.swap",
        "pillar": "serverfix:swap:overcommit_memory",
        "hint": "vm.overcommit_memory = 1 (serverfix.swap persists it); the warning goes at "
        "Redis's next start",
    },
    {
        "kind": "thp",
        "match": "transparent huge pages",
        "title": "Redis warns about transparent huge pages (latency, memory use)",
        "state": None,
        "pillar": None,
        "hint": "`disable-thp yes` in redis.conf (Debian's default), or THP madvise: echo "
        "madvise > /sys/kernel/mm/transparent_hugepage/enabled (persist: "
        "transparent_hugepage=madvise on the kernel command line)",
    },
    {
        "kind": "somaxconn",
        "match": "somaxconn",
        "title": "Redis warns that the kernel caps its TCP backlog (net.core.somaxconn)",
        "state": None,
        "pillar": None,
        "hint": "net.core.somaxconn at least Redis's tcp-backlog (e.g. a sysctl.d file with "
        "net.core.somaxconn = 1024), or a lower tcp-backlog in redis.conf",
    },
)
OTHER = {
    "kind": "other",
    "title": "Redis logged a startup warning",
    "state": None,
    "pillar": None,
    "hint": "follow Redis's advice in the line",
}


def memory_bytes(value):
    """Bytes of a Redis memory size (``512mb``, ``1g``, ``1048576``: Redis's units, ``k`` = 1000,
    ``kb`` = 1024); ``None`` for anything else."""
    match = MEMORY_RE.match(str(value).strip())
    if not match:
        return None
    return int(match.group(1)) * UNITS[(match.group(2) or "").lower()]


def size_text(num_bytes):
    """A byte count as redis.conf writes it: whole ``gb`` or ``mb`` when exact, else bytes."""
    for unit in ("gb", "mb"):
        if num_bytes and num_bytes % UNITS[unit] == 0:
            return f"{num_bytes // UNITS[unit]}{unit}"
    return str(num_bytes)


def auto_maxmemory(total, limit=None):
    """The ``maxmemory`` for ``maxmemory: auto`` in bytes: 1/8 of the usable RAM (the smaller of
    ``total`` and the cgroup ``limit``, ``None`` = no limit), at least 64 MB, at most 1 GB,
    rounded down to whole MB. 4 GiB -> 512 MB; 24 GiB -> 1 GB (the ceiling)."""
    usable = min(total, limit) if limit else total
    share = min(max(usable // AUTO_DIVISOR, AUTO_FLOOR), AUTO_CEILING)
    return share - share % (1 << 20)


def _read(path):
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def mem_total(meminfo=MEMINFO):
    """``MemTotal`` of ``meminfo`` in bytes (0 when it cannot be read)."""
    for line in (_read(meminfo) or "").splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if key == "MemTotal" and parts and parts[0].isdigit():
            return int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return 0


def cgroup_limit(service="redis-server", cgroup_root=CGROUP_ROOT):
    """``(bytes, file)`` of the lowest cgroup v2 ``memory.max`` that applies to ``service``: its
    own cgroup (``system.slice/<service>.service``), the slice and the root (in a container: the
    container's own). ``(None, None)``: no limit (``max``) or no cgroup v2."""
    unit = service if service.endswith(".service") else f"{service}.service"
    found = (None, None)
    for rel in (os.path.join("system.slice", unit), "system.slice", ""):
        path = os.path.join(cgroup_root, rel, "memory.max")
        text = (_read(path) or "").strip()
        if text.isdigit() and (found[0] is None or int(text) < found[0]):
            found = (int(text), path)
    return found


def host_memory(service="redis-server", meminfo=MEMINFO, cgroup_root=CGROUP_ROOT):
    """The RAM the host really has for ``service``: ``{"mem_total", "cgroup_limit",
    "cgroup_file", "usable"}`` in bytes (``usable`` = the smaller of the two)."""
    total = mem_total(meminfo)
    limit, path = cgroup_limit(service, cgroup_root)
    usable = min(total, limit) if limit and total else (limit or total)
    return {"mem_total": total, "cgroup_limit": limit, "cgroup_file": path, "usable": usable}


def resolve_maxmemory(value, service="redis-server", meminfo=MEMINFO, cgroup_root=CGROUP_ROOT):
    """``{"value", "bytes", "basis"}`` for a ``maxmemory`` setting: ``auto`` sized by
    :func:`auto_maxmemory` from :func:`host_memory` (``basis``); ``''``/``None`` leaves Redis's
    as it is (``value`` ``''``, ``bytes`` ``None``); anything else as given (``0`` = no limit)."""
    if value in ("", None):
        return {"value": "", "bytes": None, "basis": None}
    if str(value).strip().lower() == AUTO:
        basis = host_memory(service, meminfo, cgroup_root)
        if not basis["usable"]:
            return {"value": "", "bytes": None, "basis": basis}  # unknown RAM: leave it alone
        chosen = auto_maxmemory(basis["usable"])
        return {"value": size_text(chosen), "bytes": chosen, "basis": basis}
    return {"value": str(value), "bytes": memory_bytes(value), "basis": None}


def thp_mode(path=THP_ENABLED):
    """The selected transparent huge pages mode (``always``, ``madvise``, ``never``) from
    ``path`` (``always [madvise] never``), ``None`` when it cannot be read."""
    match = re.search(r"\[(\w+)\]", _read(path) or "")
    return match.group(1) if match else None


def since_start(lines):
    """The lines of Redis's last run: those after the last ``Redis is starting`` line (all of
    them when the tail holds no start)."""
    starts = [i for i, line in enumerate(lines) if START_MARKER in line]
    return lines[starts[-1] + 1 :] if starts else list(lines)


def startup_warnings(lines, mask=None):
    """Redis's ``WARNING`` lines of its last run (:func:`since_start`), each as ``{"kind",
    "line", "title", "fix": {state, pillar, hint}}``, one per line, in log order. ``mask``
    (``serverfix_mask.text``-like, one line in, one out) is applied to every line kept; no other
    log line leaves this function."""
    found = []
    for line in since_start(lines):
        text = line.split(" # ", 1)[1] if " # " in line else line
        if not text.lstrip("# ").upper().startswith("WARNING"):
            continue
        known = next((w for w in WARNINGS if w["match"] in text.lower()), OTHER)
        shown = mask(text.strip()) if mask else text.strip()
        found.append(
            {
                "kind": known["kind"],
                "line": shown[:300],
                "title": known["title"],
                "fix": {"state": known["state"], "pillar": known["pillar"], "hint": known["hint"]},
            }
        )
    return found
