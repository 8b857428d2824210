"""
serverfix.verify (and the serverfix.verified state) through the real Salt loader, against real
services: our own redis-server (random port, with a password), a real init script for it (this
host has no systemd: Salt's service module asks `service NAME status` and rc2.d), real .env files,
real pm2 with the stand-in apps, a real 32M swap file (swapoff in a finally), a real HTTP probe.

The sysctl check compares with the pillar: the tests set the pillar to the kernel's current
values instead of changing kernel-global sysctls (the swap tests own those).
"""

import json
import os
import random
import string
import subprocess
import time

import pytest

from tests.support.backend import BACKEND_APP, IDLE_APP, QUEUE_KEYS, READY, write_env
from tests.support.diagnose import problems, settings, statuses
from tests.support.host import free_port
from tests.support.redis import RedisServer, SysvService
from tests.support.swap import read_sysctl

PASSWORD = "Vf9-verify-secret-0815"


def _fs_type(path):
    return subprocess.run(
        ["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture(scope="module")
def swapfile(workdir):
    """A real, active 32M swap file on ext4 (swapon fails on tmpfs/overlayfs); off and gone
    afterwards."""
    directory = workdir if _fs_type(workdir) in ("ext2/ext3", "ext4") else "/var/tmp"
    path = os.path.join(directory, f"serverfix-verify-{os.getpid()}.swap")
    subprocess.run(
        ["dd", "if=/dev/zero", f"of={path}", "bs=1M", "count=32", "status=none"], check=True
    )
    os.chmod(path, 0o600)
    subprocess.run(["mkswap", path], check=True, capture_output=True)
    subprocess.run(["swapon", path], check=True)
    try:
        yield path
    finally:
        subprocess.run(["swapoff", path], check=False)
        os.unlink(path)


def fixed_settings(pm2, env_file, backend_name, redis, service, swap_file, **sections):
    """The pillar of a host where every phase has been applied (Redis with a password)."""
    return settings(
        dotenv={"file": str(env_file)},
        pm2={"home": str(pm2.home), "bin": pm2.bin},
        # maxmemory '' (left alone): test_serverfix_redis_memory.py checks maxmemory
        redis={"port": redis.port, "password": PASSWORD, "service": service, "maxmemory": ""},
        backend=dict({"name": backend_name}, **sections.pop("backend", {})),
        remove_processes=["verify-studio"],
        swap={
            "file": swap_file,
            "size": "32M",
            "swappiness": int(read_sysctl("vm.swappiness")),
            "vfs_cache_pressure": int(read_sysctl("vm.vfs_cache_pressure")),
            "overcommit_memory": int(read_sysctl("vm.overcommit_memory")),
        },
        **sections,
    )


def test_before_server_fails(modules, workdir, pm2):
    env_file = write_env(workdir / "before" / ".env", {})
    pm2.start("before-backend", BACKEND_APP, env={"ENV_FILE": str(env_file)})
    pm2.start("prisma-studio", IDLE_APP)
    try:
        pm2.wait_log("before-backend", "Queue-System ist deaktiviert")
        config = settings(
            dotenv={"file": str(env_file)},
            pm2={"home": str(pm2.home), "bin": pm2.bin},
            redis={"port": free_port(), "service": "serverfix-verify-absent"},
            backend={"name": "before-backend"},
            swap={
                "file": str(workdir / "no.swap"),
                "swappiness": int(read_sysctl("vm.swappiness")) + 1,
            },
        )
        start = time.perf_counter()
        report = modules.serverfix.verify(config=config)
        wall = time.perf_counter() - start
        print(f"\nbefore: verify {wall:.3f} s: {statuses(report)}")
    finally:
        pm2.delete("prisma-studio")
        pm2.delete("before-backend")
    assert statuses(report) == {
        "redis-service": "fail",
        "redis-ping": "fail",
        "redis-loopback-only": "fail",
        "redis-eviction-policy": "fail",
        "redis-maxmemory": "skip",  # Redis does not answer
        "redis-thp": "skip",
        "redis-warnings": "skip",
        "env-keys": "fail",
        "env-not-shadowed": "pass",
        "swap": "fail",
        "sysctl": "fail",
        "pm2-online": "pass",
        "pm2-removed": "fail",
        "backend-ready": "warn",
        # no boot unit for the sandbox's PM2_HOME, the backend not saved: warn (report only)
        "pm2-boot": "warn",
        "pm2-saved": "warn",
        "memory": "info",
        "http-probe": "skip",
    }
    assert report["ok"] is False and report["counts"]["fail"] == 8
    print(f"\nverify on the 'before' server: {wall:.2f} s")  # a figure, not an assertion
    checks = {c["id"]: c for c in report["checks"]}
    assert "Connection refused" in checks["redis-ping"]["title"]
    assert checks["env-keys"]["evidence"]["wanted"]["REDIS_PASSWORD"] == ""
    assert checks["pm2-removed"]["evidence"]["in_list"] == ["prisma-studio"]
    assert checks["backend-ready"]["fix"]["pillar"] == "serverfix:backend:restart"


@pytest.mark.destructive_test
def test_fix_applied_then_backend_restarted(modules, states, workdir, pm2, swapfile):
    """The runbook's flow: the backend runs with the old .env; every phase gets applied (Redis,
    .env, prisma-studio deleted and saved, swap); verify passes but warns until the backend is
    restarted, then every check passes."""
    env_file = write_env(workdir / "after" / ".env", {})
    http_port = free_port()
    pm2.start(
        "verify-backend", BACKEND_APP, env={"ENV_FILE": str(env_file), "PORT": str(http_port)}
    )
    pm2.start("verify-studio", IDLE_APP)
    pm2.save()
    service = "sfdiag-redis-" + "".join(
        random.choices(string.ascii_lowercase, k=8)
    )  # no digits: rc2.d parsing
    try:
        pm2.wait_log("verify-backend", "Queue-System ist deaktiviert")
        with RedisServer(workdir, password=PASSWORD) as redis, SysvService(service, redis):
            # Phase 2 and 3 done by hand here (their own tests cover the states)
            write_env(
                env_file,
                dict(
                    QUEUE_KEYS,
                    REDIS_HOST="127.0.0.1",
                    REDIS_PORT=redis.port,
                    REDIS_PASSWORD=PASSWORD,
                ),
            )
            pm2.delete("verify-studio")
            pm2.save()
            config = fixed_settings(
                pm2,
                env_file,
                "verify-backend",
                redis,
                service,
                swapfile,
                verify={"url": f"http://127.0.0.1:{http_port}/", "requests": 10, "limit_ms": 100},
            )

            report = modules.serverfix.verify(config=config)
            expected = {cid: "pass" for cid in statuses(report)}
            # pm2-boot: the host has no pm2-root.service for the sandbox (report only)
            expected.update({"memory": "info", "backend-ready": "warn", "pm2-boot": "warn"})
            # maxmemory '' and redis.conf (the host's) not this Redis's: nothing to read
            expected.update({"redis-maxmemory": "skip", "redis-warnings": "skip"})
            assert statuses(report) == expected, json.dumps(report["checks"], indent=1)
            assert report["ok"] is True  # a warning does not fail the run
            checks = {c["id"]: c for c in report["checks"]}
            assert (
                checks["redis-ping"]["evidence"]["auth"] is True
                and checks["redis-ping"]["evidence"]["reply"] == "PONG"
            )
            assert checks["swap"]["evidence"]["size_mb"] == 32.0
            assert checks["http-probe"]["evidence"]["requests"] == 10
            assert checks["http-probe"]["evidence"]["median_ms"] < 100

            # with serverfix:backend:restart true a missing restart is a failure
            strict = fixed_settings(
                pm2, env_file, "verify-backend", redis, service, swapfile, backend={"restart": True}
            )
            assert statuses(modules.serverfix.verify(config=strict))["backend-ready"] == "fail"

            # the state: fails the run on a failing check, changes nothing
            ret = states.serverfix.verified(name="serverfix-verified", config=strict)
            assert ret.result is False and ret.changes == {}
            assert "FAIL backend-ready" in ret.comment and PASSWORD not in ret.comment

            pm2.restart("verify-backend")
            pm2.wait_log("verify-backend", READY)
            start = time.perf_counter()
            report = modules.serverfix.verify(config=config)
            wall = time.perf_counter() - start
            shown = statuses(report)
            assert shown.pop("pm2-boot") == "warn"  # no boot unit for the sandbox (report only)
            assert (shown.pop("redis-maxmemory"), shown.pop("redis-warnings")) == ("skip", "skip")
            assert set(shown.values()) == {"pass", "info"}, json.dumps(report["checks"], indent=1)
            assert report["ok"] is True
            print(f"\nverify on the fixed server: {wall:.2f} s")

            start = time.perf_counter()
            diagnosis = modules.serverfix.diagnose(
                config=config
            )  # the real /proc/swaps: ours is active
            print(
                f"\nafter: verify {wall:.3f} s: {statuses(report)}\nafter: diagnose "
                f"{time.perf_counter() - start:.3f} s: "
                f"{[(f['id'], f['severity']) for f in diagnosis['findings']]}"
            )
            assert problems(diagnosis) == {}, diagnosis["findings"]

            ret = states.serverfix.verified(name="serverfix-verified", config=config)
            assert (
                ret.result is True
                and ret.changes == {}
                and ret.comment.startswith("All checks passed")
            )
            for data in (report, diagnosis, ret.comment):
                assert PASSWORD not in json.dumps(data)
    finally:
        pm2.delete("verify-backend")


def test_state_in_test_mode_reports_without_failing(modules, states, workdir, pm2):
    env_file = write_env(workdir / "testmode" / ".env", {})
    config = settings(
        dotenv={"file": str(env_file)},
        pm2={"home": str(pm2.home), "bin": pm2.bin},
        redis={"port": free_port(), "service": "serverfix-verify-absent"},
    )
    ret = states.serverfix.verified(name="serverfix-verified", config=config, test=True)
    assert ret.result is None and ret.changes == {}
    assert ret.comment.startswith("Would verify after the changes above")
    assert "FAIL redis-ping" in ret.comment and "FAIL env-keys" in ret.comment


def test_http_probe_over_the_limit_fails_fast(modules, workdir, pm2):
    env_file = write_env(workdir / "slow" / ".env", {})
    http_port = free_port()
    pm2.start(
        "slow-backend",
        BACKEND_APP,
        env={"ENV_FILE": str(env_file), "PORT": str(http_port), "SLOW_MS": "300"},
    )
    try:
        pm2.wait_log("slow-backend", "Queue-System ist deaktiviert")
        config = settings(
            dotenv={"file": str(env_file)},
            pm2={"home": str(pm2.home), "bin": pm2.bin},
            redis={"enabled": False},
            swap={"enabled": False},
            remove_processes=[],
            backend={"name": "slow-backend"},
            verify={"url": f"http://127.0.0.1:{http_port}/slow", "requests": 10, "limit_ms": 100},
        )
        start = time.perf_counter()
        report = modules.serverfix.verify(config=config)
        wall = time.perf_counter() - start
    finally:
        pm2.delete("slow-backend")
    probe = next(c for c in report["checks"] if c["id"] == "http-probe")
    assert probe["status"] == "fail" and probe["evidence"]["median_ms"] >= 300
    assert 1 <= probe["evidence"]["requests"] < 10  # stopped early: the median was decided
    print(f"\nverify with a slow probe: {wall:.2f} s")


def test_report_shape_is_stable(modules, workdir, pm2):
    config = settings(
        dotenv={"file": str(workdir / "missing.env")},
        pm2={"home": str(pm2.home), "bin": pm2.bin},
        redis={"port": free_port()},
    )
    report = modules.serverfix.verify(config=config)
    assert list(report) == [
        "function",
        "version",
        "ok",
        "duration_ms",
        "counts",
        "settings",
        "checks",
    ]
    assert list(report["counts"]) == ["fail", "warn", "pass", "skip", "info"]
    assert [c["id"] for c in report["checks"]] == [
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
    ]
    for check in report["checks"]:
        assert list(check) == ["id", "status", "title", "evidence", "fix"]
    assert "missing.env does not exist" in report["checks"][7]["title"]


def test_secret_env_values_never_shown(modules, workdir, pm2):
    """REDIS_PASSWORD, keys in serverfix:dotenv:secret_keys and secret-looking names (dotenv's
    rule)."""
    env_file = write_env(
        workdir / "secrets" / ".env",
        {
            "JWT_SECRET": "old-jwt-value-1",
            "API_SIGNING": "old-sig-22",
            "REDIS_PASSWORD": "old-redis-pw-3",
            "APP_MODE": "dev",
        },
    )
    config = settings(
        dotenv={
            "file": str(env_file),
            "secret_keys": ["API_SIGNING"],
            "extra": {
                "JWT_SECRET": "new-jwt-value-1",
                "API_SIGNING": "new-sig-22",
                "APP_MODE": "production",
            },
        },
        pm2={"home": str(pm2.home), "bin": pm2.bin},
        redis={"port": free_port(), "password": "new-redis-pw-3"},
    )
    verify = modules.serverfix.verify(config=config)
    diagnose = modules.serverfix.diagnose(config=config)
    env_check = next(c for c in verify["checks"] if c["id"] == "env-keys")
    # every dotenv:extra value is possibly secret, whatever its name (issue 12, item 13)
    for key in ("JWT_SECRET", "API_SIGNING", "REDIS_PASSWORD", "APP_MODE"):
        assert env_check["evidence"]["different"][key] == {
            "found": "<secret>",
            "wanted": "<secret>",
        }
        assert env_check["evidence"]["wanted"][key] == "<secret>"
    text = json.dumps([verify, diagnose])
    for value in ("jwt-value-1", "sig-22", "redis-pw-3"):
        assert value not in text
