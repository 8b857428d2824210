"""
_utils/serverfix_redismem.py: the maxmemory sizing rule (4 GB and 24 GB hosts, a cgroup v2
limit, floor and ceiling), the RAM the host really has from files in /proc/meminfo' and the
cgroup v2 tree's formats, the THP mode, and the parser of Redis's startup warnings on the lines
a real redis-server 7 writes here (its own logfile in a temp directory).
"""

from pathlib import Path

import pytest

from tests.support.loader import import_salt_module
from tests.support.paths import UTILS_DIR
from tests.support.redis import RedisServer

redismem = import_salt_module(UTILS_DIR / "serverfix_redismem.py", "serverfix_unit_redismem")
mask = import_salt_module(UTILS_DIR / "serverfix_mask.py", "serverfix_unit_redismem_mask")

GIB = 1 << 30
MIB = 1 << 20
# Redis's THP warning, as Redis prints it (it needs THP [always] with disable-thp no, which is
# kernel-global here): the line of Redis's source (server.c, linuxMemoryWarnings)
THP_LINE = (
    "1:M 17 Aug 2020 05:09:58.872 # WARNING you have Transparent Huge Pages (THP) support "
    "enabled in your kernel. This will create latency and memory usage issues with Redis. To "
    "fix this issue run the command 'echo never > /sys/kernel/mm/transparent_hugepage/enabled' "
    "as root, and add it to your /etc/rc.local in order to retain the setting after a reboot. "
    "Redis must be restarted after THP is disabled."
)


@pytest.mark.parametrize(
    ("mem_total", "limit", "expected"),
    [
        (4 * GIB, None, 512 * MIB),  # the runbook's server: 1/8
        (24 * GIB, None, GIB),  # the build machine: the ceiling
        (24 * GIB, 2 * GIB, 256 * MIB),  # a container VPS: the cgroup limit counts
        (4 * GIB, 8 * GIB, 512 * MIB),  # a limit above the RAM changes nothing
        (256 * MIB, None, 64 * MIB),  # the floor
        (4_026_531_840 + 12345, None, 480 * MIB),  # whole MB, rounded down
    ],
)
def test_auto_maxmemory(mem_total, limit, expected):
    assert redismem.auto_maxmemory(mem_total, limit) == expected


def test_size_text_and_memory_bytes_round_trip():
    assert redismem.size_text(512 * MIB) == "512mb" and redismem.size_text(GIB) == "1gb"
    assert redismem.memory_bytes("512mb") == 512 * MIB and redismem.memory_bytes("1g") == 10**9
    assert redismem.memory_bytes("0") == 0 and redismem.memory_bytes("auto") is None


def _meminfo(path, kib):
    path.write_text(f"MemTotal:       {kib} kB\nMemFree:        1000 kB\n", encoding="ascii")
    return str(path)


def _cgroup(root, rel, value):
    directory = root / rel
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "memory.max").write_text(value + "\n", encoding="ascii")


def test_host_memory_takes_the_lowest_cgroup_limit_over_the_service(tmp_path):
    meminfo = _meminfo(tmp_path / "meminfo", 24 * GIB // 1024)
    root = tmp_path / "cgroup"
    _cgroup(root, "", "max")
    _cgroup(root, "system.slice", str(3 * GIB))
    _cgroup(root, "system.slice/redis-server.service", str(2 * GIB))
    _cgroup(root, "system.slice/other.service", str(MIB))  # not Redis's
    got = redismem.host_memory("redis-server", meminfo=meminfo, cgroup_root=str(root))
    assert got == {
        "mem_total": 24 * GIB,
        "cgroup_limit": 2 * GIB,
        "cgroup_file": str(root / "system.slice/redis-server.service/memory.max"),
        "usable": 2 * GIB,
    }
    resolved = redismem.resolve_maxmemory("auto", "redis-server", meminfo, str(root))
    assert (resolved["value"], resolved["bytes"]) == ("256mb", 256 * MIB)


def test_host_memory_root_cgroup_limit_and_max(tmp_path):
    meminfo = _meminfo(tmp_path / "meminfo", 4 * GIB // 1024)
    root = tmp_path / "cgroup"
    _cgroup(root, "", "max")  # no limit: MemTotal
    assert redismem.resolve_maxmemory("auto", meminfo=meminfo, cgroup_root=str(root))["value"] == (
        "512mb"
    )
    _cgroup(root, "", str(GIB))  # a container's own root
    assert redismem.host_memory(meminfo=meminfo, cgroup_root=str(root))["usable"] == GIB
    assert redismem.resolve_maxmemory("auto", meminfo=meminfo, cgroup_root=str(root))["value"] == (
        "128mb"
    )
    # no cgroup v2 at all (a v1 host): MemTotal
    no_v2 = redismem.host_memory(meminfo=meminfo, cgroup_root=str(tmp_path / "absent"))
    assert no_v2["cgroup_limit"] is None and no_v2["usable"] == 4 * GIB


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", ("", None)), (None, ("", None)), (0, ("0", 0)), ("256mb", ("256mb", 256 * MIB))],
)
def test_explicit_maxmemory_wins(tmp_path, value, expected):
    meminfo = _meminfo(tmp_path / "meminfo", 4 * GIB // 1024)
    got = redismem.resolve_maxmemory(value, meminfo=meminfo, cgroup_root=str(tmp_path))
    assert (got["value"], got["bytes"]) == expected and got["basis"] is None


@pytest.mark.parametrize(
    ("text", "mode"),
    [("[always] madvise never", "always"), ("always [madvise] never", "madvise"), ("", None)],
)
def test_thp_mode(tmp_path, text, mode):
    path = tmp_path / "enabled"
    path.write_text(text + "\n", encoding="ascii")
    assert redismem.thp_mode(str(path)) == mode
    assert redismem.thp_mode(str(tmp_path / "absent")) is None


@pytest.fixture
def redis_log(tmp_path):
    """The log of a real redis-server 7 start that warns: tcp-backlog above somaxconn, and
    (while vm.overcommit_memory is not 1 here) overcommit; the lines before the start are an
    older run's."""
    logfile = tmp_path / "redis.log"
    logfile.write_text(
        "1:M 01 Dec 2026 10:00:00.000 # oO0OoO0OoO0Oo Redis is starting oO0OoO0OoO0Oo\n"
        "1:M 01 Dec 2026 10:00:00.001 # WARNING an older run's warning\n",
        encoding="utf-8",
    )
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text(encoding="ascii"))
    overcommit = Path("/proc/sys/vm/overcommit_memory").read_text(encoding="ascii").strip()
    server = RedisServer(
        tmp_path, extra=(f"logfile {logfile}", f"tcp-backlog {somaxconn + 1}")
    ).start()
    server.stop()
    return logfile.read_text(encoding="utf-8").splitlines(), overcommit


def test_startup_warnings_of_a_real_redis(redis_log):
    lines, overcommit = redis_log
    found = redismem.startup_warnings(lines)
    kinds = [item["kind"] for item in found]
    assert "somaxconn" in kinds and "older run" not in str(found)
    assert ("overcommit" in kinds) == (overcommit != "1")
    somaxconn = next(item for item in found if item["kind"] == "somaxconn")
    assert somaxconn["line"].startswith("WARNING: The TCP backlog setting of")
    assert "net.core.somaxconn" in somaxconn["fix"]["hint"]
    if overcommit != "1":
        item = next(item for item in found if item["kind"] == "overcommit")
        assert item["line"].startswith("WARNING Memory overcommit must be enabled!")
        assert item["fix"]["pillar"] == "serverfix:swap:overcommit_memory"
    # only WARNING lines leave the parser, none of the others
    assert all(item["line"].startswith("WARNING") for item in found)


def test_startup_warnings_thp_other_and_masking():
    lines = [
        "9:M 02 Dec 2026 00:00:00.000 # oO0OoO0OoO0Oo Redis is starting oO0OoO0OoO0Oo",
        THP_LINE.replace("1:M 17 Aug 2020", "9:M 02 Dec 2026"),
        "9:M 02 Dec 2026 00:00:00.002 # WARNING something new, requirepass=hunter2-secret",
        "9:M 02 Dec 2026 00:00:00.003 * Ready to accept connections hunter2-secret",
    ]
    found = redismem.startup_warnings(lines, mask=lambda line: mask.text(line, ["hunter2-secret"]))
    assert [item["kind"] for item in found] == ["thp", "other"]
    assert "disable-thp yes" in found[0]["fix"]["hint"]
    assert "hunter2" not in str(found) and "<secret>" in found[1]["line"]
    assert redismem.startup_warnings([]) == []
