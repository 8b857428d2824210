"""
Redis memory safety in serverfix.diagnose and serverfix.verify through the real Salt loader,
against our own redis-server (random port, its own redis.conf and logfile in a temp directory):
maxmemory against ``auto`` for a 4 GB host (a /proc/meminfo copy) and a cgroup v2 limit (a tree
in the temp directory), transparent huge pages (a copy of the THP file: the real one is
kernel-global), Redis's own disable-thp, and the WARNING lines the real Redis logs at its start.
"""

import pytest

from tests.support.diagnose import settings, statuses
from tests.support.redis import RedisServer
from tests.support.swap import read_sysctl, write_sysctl

GIB = 1 << 30


@pytest.fixture
def host(tmp_path):
    """Injected host files: a 4 GiB MemTotal, a cgroup tree, THP [always]."""
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(f"MemTotal:       {4 * GIB // 1024} kB\n", encoding="ascii")
    thp = tmp_path / "thp_enabled"
    thp.write_text("[always] madvise never\n", encoding="ascii")
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    (cgroup / "memory.max").write_text("max\n", encoding="ascii")
    return {"meminfo": str(meminfo), "cgroup_root": str(cgroup), "thp_enabled": str(thp)}


def _server(tmp_path, *extra):
    somaxconn = int(read_sysctl("net.core.somaxconn"))
    logfile = tmp_path / "redis-own.log"
    return RedisServer(
        tmp_path, extra=(f"logfile {logfile}", f"tcp-backlog {somaxconn + 1}", *extra)
    )


def _config(tmp_path, server, **redis):
    return settings(
        dotenv={"file": str(tmp_path / "missing.env")},
        pm2={"home": str(tmp_path / "pm2-home")},
        remove_processes=[],
        redis=dict(
            {"port": server.port, "config": str(server.conf), "service": "serverfix-mem-absent"},
            **redis,
        ),
        swap={"file": str(tmp_path / "swapfile")},
    )


def _findings(report):
    return {f["id"]: f for f in report["findings"]}


def test_unlimited_redis_thp_always_and_startup_warnings_are_found(modules, tmp_path, host):
    overcommit = read_sysctl("vm.overcommit_memory")
    with _server(tmp_path, "disable-thp no") as server:
        config = _config(tmp_path, server)
        report = modules.serverfix.diagnose(config=config, **host)
        found = _findings(report)

        maxmemory = found["redis-maxmemory"]
        assert maxmemory["severity"] == "warning"
        assert maxmemory["evidence"]["current"] == 0
        assert maxmemory["evidence"]["wanted_value"] == "512mb"  # 1/8 of 4 GiB
        assert "512mb" in maxmemory["title"] and "4096 MB" in maxmemory["title"]
        assert maxmemory["fix"]["pillar"] == "serverfix:redis:maxmemory"

        thp = found["redis-thp"]
        assert thp["severity"] == "warning" and thp["evidence"]["disable_thp"] == "no"
        assert "madvise" in thp["fix"]["hint"] and "disable-thp yes" in thp["fix"]["hint"]

        somaxconn = found["redis-warning-somaxconn"]
        assert somaxconn["evidence"]["lines"][0].startswith("WARNING: The TCP backlog setting")
        assert "net.core.somaxconn" in somaxconn["fix"]["hint"]
        if overcommit != "1":
            item = found["redis-warning-overcommit"]
            assert item["severity"] == "warning"
            assert item["fix"] == {
                "state": "serverfix.swap",
                "pillar": "serverfix:swap:overcommit_memory",
                "hint": item["fix"]["hint"],
            }
        # no other log line is in the report
        assert "Server initialized" not in str(report) and "ready to accept" not in str(report)

        checks = statuses(modules.serverfix.verify(config=config, set_retcode=False, **host))
        assert (checks["redis-maxmemory"], checks["redis-thp"], checks["redis-warnings"]) == (
            "fail",
            "warn",
            "warn",
        )
        assert checks["sysctl"] == ("pass" if overcommit == "1" else "fail")


def test_a_cgroup_limit_sizes_auto_and_the_right_redis_passes(modules, tmp_path, host):
    # a container VPS with 1 GiB: 1/8 -> 128mb; Redis's own disable-thp yes covers THP [always]
    (tmp_path / "cgroup" / "memory.max").write_text(f"{GIB}\n", encoding="ascii")
    with RedisServer(tmp_path, extra=("maxmemory 128mb", "disable-thp yes")) as server:
        config = _config(tmp_path, server)
        found = _findings(modules.serverfix.diagnose(config=config, **host))
        assert "redis-maxmemory" not in found and "redis-thp" not in found
        assert not [fid for fid in found if fid.startswith("redis-warning")]
        checks = statuses(modules.serverfix.verify(config=config, set_retcode=False, **host))
        assert (checks["redis-maxmemory"], checks["redis-thp"]) == ("pass", "pass")

        # an explicit value wins over auto; '' leaves it alone
        explicit = _config(tmp_path, server, maxmemory="256mb")
        found = _findings(modules.serverfix.diagnose(config=explicit, **host))
        assert found["redis-maxmemory"]["evidence"]["wanted_value"] == "256mb"
        alone = _config(tmp_path, server, maxmemory="")
        checks = statuses(modules.serverfix.verify(config=alone, set_retcode=False, **host))
        assert checks["redis-maxmemory"] == "skip"


def test_thp_madvise_is_fine_even_with_disable_thp_no(modules, tmp_path, host):
    with open(host["thp_enabled"], "w", encoding="ascii") as handle:
        handle.write("always [madvise] never\n")
    with RedisServer(tmp_path, extra=("disable-thp no",)) as server:
        config = _config(tmp_path, server)
        assert "redis-thp" not in _findings(modules.serverfix.diagnose(config=config, **host))
        checks = statuses(modules.serverfix.verify(config=config, set_retcode=False, **host))
        assert checks["redis-thp"] == "pass"


def test_warnings_of_an_older_run_do_not_count(modules, tmp_path, host):
    """Only the lines after Redis's last start: a restart with the cause gone clears them."""
    with _server(tmp_path) as server:
        config = _config(tmp_path, server)
        assert "redis-warning-somaxconn" in _findings(
            modules.serverfix.diagnose(config=config, **host)
        )
        server.stop()
        server.conf.write_text(
            server.conf.read_text(encoding="utf-8").replace("tcp-backlog", "# tcp-backlog"),
            encoding="utf-8",
        )
        server.start()
        found = _findings(modules.serverfix.diagnose(config=config, **host))
        assert "redis-warning-somaxconn" not in found


@pytest.mark.destructive_test
def test_an_overcommit_warning_fixed_since_redis_started_passes_verify(
    modules, tmp_path, host, sysctl_restore
):
    # kernel-global: vm.overcommit_memory is 0 while our Redis starts (it logs the warning), then
    # 1 as Phase 4 sets it after Phase 1 started Redis; sysctl_restore writes the old value back
    write_sysctl("vm.overcommit_memory", "0")
    logfile = tmp_path / "redis-own.log"
    with RedisServer(tmp_path, extra=(f"logfile {logfile}", "tcp-backlog 16")) as server:
        config = _config(tmp_path, server)
        write_sysctl("vm.overcommit_memory", "1")
        report = modules.serverfix.verify(config=config, set_retcode=False, **host)
        [check] = [c for c in report["checks"] if c["id"] == "redis-warnings"]
        assert check["status"] == "pass" and "1 fixed since" in check["title"], check
        assert "overcommit_memory" in check["evidence"]["lines"][0]
        found = _findings(modules.serverfix.diagnose(config=config, **host))
        assert found["redis-warning-overcommit"]["severity"] == "info"
