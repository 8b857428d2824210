"""
serverfix.diagnose through the real Salt loader, against real services on this machine:
our own redis-server processes (random ports), real .env files read by the real dotenv module,
real pm2 (own PM2_HOME) running the stand-in apps tests/apps/diag_*.js.

Swap is kernel-global (other tests switch it on and off concurrently): the "no swap" and
"some swap" cases point diagnose's ``proc_swaps`` at a file in /proc/swaps' format
(tests/support/diagnose.py); a real swap file is used in test_serverfix_verify.py.
"""

import json
import time

import pytest
from salt.exceptions import SaltInvocationError

from tests.support.backend import BACKEND_APP, IDLE_APP, QUEUE_KEYS, READY, write_env
from tests.support.diagnose import fake_proc_swaps, problems, settings
from tests.support.host import free_port
from tests.support.pm2 import LIST_CALL
from tests.support.redis import RedisServer

PASSWORD = "Xq7-diag-secret-4711"
SWAP_ON = [("/var/tmp/other.swap", 524284)]


@pytest.fixture(scope="module")
def swaps(workdir):
    return {
        "none": fake_proc_swaps(workdir / "swaps-none"),
        "on": fake_proc_swaps(workdir / "swaps-on", SWAP_ON),
    }


def base_settings(pm2, env_file, backend, port, **sections):
    return settings(
        dotenv={"file": str(env_file)},
        pm2={"home": str(pm2.home), "bin": pm2.bin},
        # maxmemory '' (left alone): these Redis run without one; test_serverfix_redis_memory.py
        # covers the maxmemory finding
        redis=dict(
            {"port": port, "service": "serverfix-diag-absent", "maxmemory": ""},
            **sections.pop("redis", {}),
        ),
        backend=dict({"name": backend}, **sections.pop("backend", {})),
        swap={"file": str(pm2.home.parent / "swapfile")},
        **sections,
    )


@pytest.fixture(scope="module")
def before(workdir, pm2):
    """The runbook's "before" server: no Redis, .env without queue keys, prisma-studio running,
    no swap."""
    env_file = write_env(workdir / "before" / ".env", {})
    pm2.start("intranet-backend", BACKEND_APP, env={"ENV_FILE": str(env_file)})
    pm2.start("prisma-studio", IDLE_APP, env={"ALLOC_MB": "48"})
    pm2.save()
    pm2.wait_log("intranet-backend", "Queue-System ist deaktiviert")
    return base_settings(pm2, env_file, "intranet-backend", free_port())


def test_before_server_reports_exactly_the_runbooks_four_problems(modules, before, swaps):
    start = time.perf_counter()
    report = modules.serverfix.diagnose(config=before, proc_swaps=swaps["none"])
    wall = time.perf_counter() - start
    print(
        f"\nbefore: diagnose {wall:.3f} s:", [(f["id"], f["severity"]) for f in report["findings"]]
    )
    assert problems(report) == {
        "redis-not-running": "critical",
        "env-queue-config": "critical",
        "swap-missing": "warning",
        "pm2-unwanted-processes": "warning",
    }, json.dumps(report["findings"], indent=1)
    assert [f["severity"] for f in report["findings"]][:4] == [
        "critical",
        "critical",
        "warning",
        "warning",
    ]
    assert {f["id"] for f in report["findings"] if f["severity"] == "info"} <= {
        "memory",
        "sysctl-values",
        "env-dotenv-version",  # no node_modules/dotenv here: a current dotenv is assumed
        # no pm2-root.service for the sandbox's PM2_HOME, no log rotation: report only (info)
        # while serverfix:pm2:startup is false
        "pm2-boot-unit",
        "pm2-logs-unrotated",
    }
    assert (
        report["ok"] is False and report["counts"]["critical"] == 2 and report["duration_ms"] < 2000
    )
    found = {f["id"]: f for f in report["findings"]}

    redis = found["redis-not-running"]
    assert (
        redis["evidence"]["listening"] == []
        and redis["evidence"]["port"] == before["redis"]["port"]
    )
    assert "refused" in redis["evidence"]["ping"].lower()
    assert redis["fix"] == {
        "state": "serverfix.redis",
        "pillar": "serverfix:redis",
        "hint": redis["fix"]["hint"],
    }

    queue = found["env-queue-config"]
    assert (
        "QUEUE_ENABLED is missing" in queue["title"]
        and "QUEUE_ENABLED" in queue["evidence"]["missing"]
    )
    assert queue["evidence"]["backend_log"][0]["symptom"] == "Queue-System ist deaktiviert"
    assert queue["fix"]["state"] == "serverfix.env"

    assert found["swap-missing"]["evidence"]["swap_total_mb"] == 0
    assert found["swap-missing"]["fix"]["state"] == "serverfix.swap"

    ram = found["pm2-unwanted-processes"]
    assert ram["evidence"]["running_mb"]["prisma-studio"] > 40  # it holds 48 MB
    assert ram["evidence"]["in_saved_dump"] == ["prisma-studio"]
    assert "High RAM use: prisma-studio runs in production" in ram["title"]
    assert "intranet-backend uses" in ram["title"] and "% of RAM" in ram["title"]
    assert ram["fix"]["pillar"] == "serverfix:remove_processes"

    memory = found["memory"]["evidence"]
    assert memory["total_mb"] > 0 and 0 < memory["used_percent"] < 100
    assert set(memory["processes"]) >= {"intranet-backend", "prisma-studio"}


def test_not_installed_is_named(modules, before, swaps):
    config = settings(**{**before, "redis": dict(before["redis"], pkg="serverfix-no-such-package")})
    report = modules.serverfix.diagnose(config=config, proc_swaps=swaps["none"])
    finding = next(f for f in report["findings"] if f["id"] == "redis-not-running")
    assert (
        finding["title"].startswith("Redis is not installed")
        and finding["evidence"]["package_installed"] is False
    )


def test_econnrefused_symptom_then_restart_pending_then_clean(modules, workdir, pm2, swaps):
    """The backend logs ECONNREFUSED while Redis is down; once Redis runs it reconnects, but the
    workers it skipped at start stay off: restart pending; after a restart the backend logs its
    ready lines and nothing is left."""
    port = free_port()
    env_file = write_env(
        workdir / "econn" / ".env", dict(QUEUE_KEYS, REDIS_HOST="127.0.0.1", REDIS_PORT=port)
    )
    pm2.start("econn-backend", BACKEND_APP, env={"ENV_FILE": str(env_file)})
    try:
        pm2.wait_log("econn-backend", "connect ECONNREFUSED", kind="err")
        pm2.wait_log("econn-backend", "Workers werden nicht gestartet")
        config = base_settings(pm2, env_file, "econn-backend", port, remove_processes=[])
        report = modules.serverfix.diagnose(config=config, proc_swaps=swaps["on"])
        assert problems(report) == {"redis-not-running": "critical"}
        log = {entry["symptom"] for entry in report["findings"][0]["evidence"]["backend_log"]}
        assert log == {
            "connect ECONNREFUSED",
            "Redis nicht verfügbar - Workers werden nicht gestartet",
        }

        with RedisServer(workdir, port=port):
            # it reconnects (as ioredis does) but the workers skipped at start stay off
            pm2.wait_log("econn-backend", "Redis-Verbindung hergestellt")
            report = modules.serverfix.diagnose(config=config, proc_swaps=swaps["on"])
            assert problems(report) == {"backend-restart-pending": "warning"}
            stale = report["findings"][0]["evidence"]["log_symptoms"]
            assert {entry["symptom"] for entry in stale} == log
            assert "env_changed_after_start" not in report["findings"][0]["evidence"]

            pm2.restart("econn-backend")
            pm2.wait_log("econn-backend", READY)
            report = modules.serverfix.diagnose(config=config, proc_swaps=swaps["on"])
            assert problems(report) == {}, report["findings"]
            assert report["ok"] is True
    finally:
        pm2.delete("econn-backend")


def test_env_changed_after_start_means_restart_pending(modules, workdir, pm2, swaps):
    env_file = write_env(workdir / "pending" / ".env", {})
    pm2.start("pending-backend", BACKEND_APP, env={"ENV_FILE": str(env_file)})
    try:
        pm2.wait_log("pending-backend", "Queue-System ist deaktiviert")
        with RedisServer(workdir) as redis:
            write_env(
                env_file, dict(QUEUE_KEYS, REDIS_HOST="127.0.0.1", REDIS_PORT=redis.port)
            )  # Phase 2 done
            config = base_settings(
                pm2, env_file, "pending-backend", redis.port, remove_processes=[]
            )
            report = modules.serverfix.diagnose(config=config, proc_swaps=swaps["on"])
        assert problems(report) == {"backend-restart-pending": "warning"}
        evidence = report["findings"][0]["evidence"]
        assert evidence["env_changed_after_start"] is True
        assert [s["symptom"] for s in evidence["log_symptoms"]] == ["Queue-System ist deaktiviert"]
        assert report["findings"][0]["fix"]["pillar"] == "serverfix:backend:restart"
    finally:
        pm2.delete("pending-backend")


def redis_problems(report):
    return {k: v for k, v in problems(report).items() if k.startswith("redis-")}


@pytest.mark.parametrize(
    "bind, host, expected",
    [
        ("::1", "127.0.0.1", {"redis-host-mismatch": "critical"}),
        ("::1", "localhost", {"redis-host-mismatch": "critical"}),
        (
            "0.0.0.0",
            "127.0.0.1",
            {"redis-not-loopback-only": "warning", "redis-remote-without-password": "critical"},
        ),
        ("127.0.0.1 ::1", "127.0.0.1", {}),
    ],
    ids=["v6-only-vs-v4", "v6-only-vs-localhost", "all-interfaces", "loopback"],
)
def test_redis_bind_and_host(modules, workdir, pm2, before, swaps, bind, host, expected):
    with RedisServer(workdir, bind=bind) as redis:
        env_file = write_env(
            workdir / f"bind-{redis.port}" / ".env",
            dict(QUEUE_KEYS, REDIS_HOST=host, REDIS_PORT=redis.port),
        )
        config = base_settings(pm2, env_file, "intranet-backend", redis.port, redis={"host": host})
        report = modules.serverfix.diagnose(config=config, proc_swaps=swaps["on"])
    assert redis_problems(report) == expected
    if "redis-host-mismatch" in expected:
        finding = next(f for f in report["findings"] if f["id"] == "redis-host-mismatch")
        assert finding["evidence"]["resolves_to"][0] == "127.0.0.1"
        assert finding["evidence"]["listening"] == ["::1"]
        assert finding["fix"]["pillar"] == "serverfix:redis:host"


def test_remote_redis_with_a_password_is_only_a_warning(modules, workdir, pm2, swaps):
    with RedisServer(workdir, bind="0.0.0.0", password=PASSWORD) as redis:
        env_file = write_env(
            workdir / f"remote-{redis.port}" / ".env",
            dict(
                QUEUE_KEYS, REDIS_HOST="127.0.0.1", REDIS_PORT=redis.port, REDIS_PASSWORD=PASSWORD
            ),
        )
        config = base_settings(pm2, env_file, "intranet-backend", redis.port)
        report = modules.serverfix.diagnose(config=config, proc_swaps=swaps["on"])
    assert redis_problems(report) == {"redis-not-loopback-only": "warning"}
    assert PASSWORD not in json.dumps(report)


def test_swap_off_by_choice_is_no_finding(modules, before, swaps):
    config = dict(before, swap=dict(before["swap"], enabled=False))
    report = modules.serverfix.diagnose(config=config, proc_swaps=swaps["none"])
    assert not [f for f in report["findings"] if f["id"].startswith("swap-")]


def test_dotenv_version_in_diagnose(modules, workdir, pm2, swaps):
    app = workdir / "old-dotenv" / "backend"
    env_file = write_env(app / ".env", QUEUE_KEYS)
    package = workdir / "old-dotenv" / "node_modules" / "dotenv" / "package.json"
    package.parent.mkdir(parents=True)
    package.write_text('{"name": "dotenv", "version": "14.3.2"}', encoding="utf-8")
    config = base_settings(pm2, env_file, "intranet-backend", free_port())
    found = {f["id"]: f for f in modules.serverfix.diagnose(config=config)["findings"]}
    assert found["env-dotenv-version"]["severity"] == "warning"
    assert "14.3.2" in found["env-dotenv-version"]["title"]
    package.write_text('{"name": "dotenv", "version": "16.4.5"}', encoding="utf-8")
    found = {f["id"]: f for f in modules.serverfix.diagnose(config=config)["findings"]}
    assert found["env-dotenv-version"]["severity"] == "info"


def test_config_is_validated(modules):
    with pytest.raises(SaltInvocationError, match="config:redis:prot: unknown key"):
        modules.serverfix.diagnose(config={"redis": {"prot": 1}})
    with pytest.raises(SaltInvocationError, match="config:swap:swappiness"):
        modules.serverfix.verify(config={"swap": {"swappiness": "³"}})
    report = modules.serverfix.diagnose(config={"redis": {"bind": ["0.0.0.0"]}})
    [invalid] = [f for f in report["findings"] if f["id"] == "pillar-invalid"]
    assert "config:redis:allow_remote" in invalid["evidence"]["errors"][0]


def test_eviction_policy_and_auth(modules, workdir, pm2, swaps):
    with RedisServer(workdir, password=PASSWORD, policy="allkeys-lru") as redis:
        good = write_env(
            workdir / "auth-good" / ".env",
            dict(
                QUEUE_KEYS, REDIS_HOST="127.0.0.1", REDIS_PORT=redis.port, REDIS_PASSWORD=PASSWORD
            ),
        )
        config = base_settings(
            pm2, good, "intranet-backend", redis.port, redis={"password": PASSWORD}
        )
        report = modules.serverfix.diagnose(config=config, proc_swaps=swaps["on"])
        assert redis_problems(report) == {"redis-eviction-policy": "warning"}
        policy = next(f for f in report["findings"] if f["id"] == "redis-eviction-policy")
        assert policy["evidence"] == {"maxmemory_policy": "allkeys-lru", "wanted": "noeviction"}

        bad = write_env(
            workdir / "auth-bad" / ".env",
            dict(
                QUEUE_KEYS,
                REDIS_HOST="127.0.0.1",
                REDIS_PORT=redis.port,
                REDIS_PASSWORD="wrong-pass",
            ),
        )
        config = base_settings(
            pm2, bad, "intranet-backend", redis.port, redis={"password": PASSWORD}
        )
        report_bad = modules.serverfix.diagnose(config=config, proc_swaps=swaps["on"])
    assert redis_problems(report_bad) == {"redis-auth-failed": "critical"}
    env_finding = next(f for f in report_bad["findings"] if f["id"] == "env-queue-config")
    assert env_finding["evidence"]["different"] == {
        "REDIS_PASSWORD": {"found": "<secret>", "wanted": "<secret>"}
    }
    for data in (report, report_bad):
        text = json.dumps(data)
        assert PASSWORD not in text and "wrong-pass" not in text


def test_env_keys_shadowed_by_pm2(modules, workdir, pm2, swaps):
    with RedisServer(workdir) as redis:
        env_file = write_env(
            workdir / "shadow" / ".env",
            dict(QUEUE_KEYS, REDIS_HOST="127.0.0.1", REDIS_PORT=redis.port),
        )
        # started from a shell with REDIS_PORT exported: pm2 keeps it and passes it on every restart
        pm2.start(
            "shadow-backend",
            BACKEND_APP,
            env={"ENV_FILE": str(env_file), "REDIS_PORT": str(redis.port)},
        )
        try:
            pm2.wait_log("shadow-backend", READY)
            config = base_settings(pm2, env_file, "shadow-backend", redis.port, remove_processes=[])
            report = modules.serverfix.diagnose(config=config, proc_swaps=swaps["on"])
        finally:
            pm2.delete("shadow-backend")
    assert problems(report) == {"env-shadowed-by-pm2": "warning"}
    assert report["findings"][0]["evidence"] == {"keys": ["REDIS_PORT"]}


def test_settings_from_defaults_and_pillar(modules):
    """Without ``config``: salt://serverfix/defaults.yaml merged with the (empty) pillar."""
    report = modules.serverfix.diagnose()
    assert report["settings"]["env_file"] == "/var/www/intranet/backend/.env"
    assert report["settings"]["backend"] == "intranet-backend"
    assert "env-unreadable" in problems(report)  # there is no intranet backend on this machine


def test_report_shape_is_stable(modules, before, swaps):
    report = modules.serverfix.diagnose(config=before, proc_swaps=swaps["none"])
    assert list(report) == [
        "function",
        "version",
        "ok",
        "duration_ms",
        "counts",
        "settings",
        "findings",
    ]
    assert report["function"] == "diagnose" and report["version"] == 1
    assert list(report["counts"]) == ["critical", "warning", "info"]
    for finding in report["findings"]:
        assert list(finding) == ["id", "severity", "title", "evidence", "fix"]
        assert list(finding["fix"]) == ["state", "pillar", "hint"]
        json.dumps(finding)  # plain data only


def test_one_pm2_call_per_run(modules, before, swaps):
    """pm2 costs ~0.3 s per CLI call: diagnose and verify read the list once (over its socket)."""
    for function in (modules.serverfix.diagnose, modules.serverfix.verify):
        modules.pm2.calls(reset=True)
        function(config=before, proc_swaps=swaps["none"])
        assert modules.pm2.calls()["commands"] == [LIST_CALL], function


def test_the_verify_state_reuses_the_pm2_list_of_a_run_that_changed_nothing(modules, before, swaps):
    """The serverfix.verified state (reuse_pm2_list=True) after the pm2 states read the list: no
    second ``jlist`` in a no-op run; a lone ``serverfix.verify`` still asks pm2."""
    pm2 = before["pm2"]
    modules.pm2.list(user=pm2["user"], pm2_home=pm2["home"], pm2_bin=pm2["bin"])
    modules.pm2.calls(reset=True)
    modules.serverfix.verify(config=before, proc_swaps=swaps["none"], reuse_pm2_list=True)
    assert modules.pm2.calls()["total"] == 0
    modules.serverfix.verify(config=before, proc_swaps=swaps["none"])
    assert modules.pm2.calls()["commands"] == [LIST_CALL]


def test_backups_left_next_to_the_env_are_a_finding(modules, tmp_path):
    """Through the real loader: the old place is listed, the formula moves nothing."""
    env_file = write_env(tmp_path / "app" / ".env", {})
    old = tmp_path / "app" / ".env.serverfix-20250101T000000.bak"
    old.write_text("OLD=1\n", encoding="utf-8")
    config = settings(
        dotenv={"file": str(env_file)},
        pm2={"home": str(tmp_path / "pm2")},
        redis={"port": free_port(), "config": str(tmp_path / "redis.conf")},
        swap={"enabled": False},
        backups={"dir": str(tmp_path / "backups")},
    )
    report = modules.serverfix.diagnose(config=config, proc_swaps=fake_proc_swaps(tmp_path / "s"))
    [found] = [f for f in report["findings"] if f["id"] == "backups-beside-files"]
    assert found["severity"] == "warning" and found["evidence"]["files"] == [str(old)]
    assert f"{tmp_path}/backups{tmp_path}/app/" in found["fix"]["hint"] and old.exists()
