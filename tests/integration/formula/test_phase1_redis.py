"""
Phase 1 for real on this machine, through a real salt-master + salt-minion, masterless salt-call
and salt-ssh: sync, preview (test=True) changes nothing, apply installs/configures/starts Redis,
PING answers, loopback only, a second apply reports zero changes, bad pillar stops everything.

Destructive: purges and installs the Debian ``redis-server`` package and runs it on 127.0.0.1:6379;
the daemon is stopped by PID and the package purged afterwards.
"""

import os
import signal
import subprocess

import pytest

from tests.support.host import dpkg_installed, sha256, wait_for
from tests.support.loader import import_salt_module
from tests.support.paths import MODULES_DIR
from tests.support.returns import by_id, changed_ids, failed_ids, summary

# the module's own /proc readers (they need no Salt loader)
redis_server = import_salt_module(MODULES_DIR / "redis_server.py", "serverfix_integ_redis_server")

pytestmark = [pytest.mark.destructive_test, pytest.mark.skip_if_not_root]

REDIS_CONF = "/etc/redis/redis.conf"
PREVIEW = {}  # what test=True said would change, compared with the real apply


def _redis_pids():
    """The service's daemon: whatever listens on 6379 (other tests use other ports)."""
    return [owner["pid"] for owner in redis_server.port_owners(6379)]


def _stop_redis():
    for pid in _redis_pids():
        os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not redis_server.listening_addresses(6379), 10, interval=0.1)


def _purge_redis():
    _stop_redis()
    subprocess.run(
        ["apt-get", "purge", "-y", "-q", "redis-server"],
        check=True,
        capture_output=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    # its config and the formula's backups of it (below the default serverfix:backups:dir)
    subprocess.run(["rm", "-rf", "/etc/redis", "/var/backups/serverfix/etc/redis"], check=True)


@pytest.fixture(scope="module", autouse=True)
def host_without_redis():
    """Start from the runbook's 'before' state: no Redis; leave none behind."""
    _purge_redis()
    yield
    _purge_redis()


def snapshot(settings):
    return {
        "redis-server installed": dpkg_installed("redis-server"),
        "redis.conf": sha256(REDIS_CONF),
        "listening 6379": redis_server.listening_addresses(6379),
        ".env": sha256(settings["dotenv"]["file"]),
    }


def test_without_sync_says_what_to_run(salt_call_local):
    ret = salt_call_local.run("--local", "state.apply", "serverfix")
    assert ret.returncode != 0
    text = str(ret.data) + ret.stdout
    assert "saltutil.sync_all" in text and "sync_mods=all" in text


def test_sync_all(salt_cli, salt_minion):
    ret = salt_cli.run("saltutil.sync_all", minion_tgt=salt_minion.id)
    assert ret.returncode == 0, summary(ret)
    assert (
        "modules.serverfix" in ret.data["modules"] and "states.redis_server" in ret.data["states"]
    )


def test_preview_changes_nothing(salt_cli, salt_minion, integration_settings):
    before = snapshot(integration_settings)
    assert before["redis-server installed"] is False and not before["listening 6379"]
    ret = salt_cli.run("state.apply", "serverfix", test=True, minion_tgt=salt_minion.id)
    assert ret.returncode == 0, summary(ret)
    states = by_id(ret.data)
    assert not failed_ids(ret.data)
    assert states["serverfix-redis-package-installed"]["result"] is None
    predicted = states["serverfix-redis-config-edited"]
    assert predicted["result"] is None
    # planned against the config file inside the package: exactly what the real run will change
    # maxmemory: auto (the default), sized on the minion from its RAM (64mb..1gb)
    assert set(predicted["changes"]) == {
        "supervised",
        "maxmemory-policy",
        "appendonly",
        "maxmemory",
    }, predicted
    assert predicted["changes"]["maxmemory"]["new"][-2:] in ("mb", "gb"), predicted
    assert states["serverfix-redis-service-running"]["result"] is None
    assert states["serverfix-redis-service-running"]["changes"] == {"redis-server": True}
    assert snapshot(integration_settings) == before
    PREVIEW["changed"] = changed_ids(ret.data)


def test_apply_installs_configures_and_starts_redis(salt_cli, salt_minion, integration_settings):
    ret = salt_cli.run("state.apply", "serverfix", minion_tgt=salt_minion.id)
    assert ret.returncode == 0, summary(ret)
    assert not failed_ids(ret.data)
    assert {
        "serverfix-redis-package-installed",
        "serverfix-redis-config-edited",
        "serverfix-redis-service-running",
    } <= set(changed_ids(ret.data))
    assert by_id(ret.data)["serverfix-redis-answers-ping"]["comment"].endswith(
        "answered PING with PONG."
    )
    assert changed_ids(ret.data) == PREVIEW["changed"]  # the preview named exactly what changed
    assert dpkg_installed("redis-server")
    conf = open(REDIS_CONF, encoding="utf-8").read().splitlines()
    for line in (
        "protected-mode yes",
        "supervised auto",
        "maxmemory-policy noeviction",
        "appendonly yes",
        "appendfsync everysec",
    ):
        assert line in conf
    assert not [line for line in conf if line.startswith("requirepass")]
    # loopback only: 127.0.0.1, and ::1 where the host has IPv6 loopback
    listeners = set(redis_server.listening_addresses(6379))
    assert listeners and listeners <= {"127.0.0.1", "::1"}, listeners
    # below serverfix:backups:dir (default /var/backups/serverfix), none next to the file
    where = "/var/backups/serverfix/etc/redis"
    backups = [n for n in os.listdir(where) if n.startswith("redis.conf.serverfix-")]
    assert len(backups) == 1 and oct(os.stat(f"{where}/{backups[0]}").st_mode & 0o777) == "0o600"
    assert not [n for n in os.listdir("/etc/redis") if n.startswith("redis.conf.serverfix-")]


def test_second_apply_reports_zero_changes(salt_cli, salt_minion):
    ret = salt_cli.run("state.apply", "serverfix", minion_tgt=salt_minion.id)
    assert ret.returncode == 0, summary(ret)
    assert changed_ids(ret.data) == []


@pytest.mark.parametrize("test_mode", [True, False], ids=["test=True", "real"])
@pytest.mark.parametrize(
    "pillar, message",
    [
        ('{"serverfix": {"redis": {"port": "abc"}}}', "serverfix:redis:port: 'abc' is not valid"),
        ('{"serverfix": {"swap": {"size": "2X"}}}', "serverfix:swap:size: '2X' is not valid"),
        (
            '{"serverfix": {"redis": {"password": "a\\nb"}}}',
            "serverfix:redis:password: <secret> is not valid",
        ),
        ('{"serverfix": {"reddis": {"port": 1}}}', "did you mean 'redis'?"),
        (
            '{"serverfix": {"redis": {"host": "127.0.0.1\\nx"}}}',
            "serverfix:redis:host: '127.0.0.1\\nx' is not valid",
        ),
    ],
    ids=["port", "size", "secret-newline", "typo", "newline-in-rendered-value"],
)
def test_bad_pillar_changes_nothing(
    salt_cli, salt_minion, integration_settings, pillar, message, test_mode
):
    before = snapshot(integration_settings)
    ret = salt_cli.run(
        "state.apply",
        "serverfix",
        f"pillar={pillar}",
        f"test={test_mode}",
        minion_tgt=salt_minion.id,
    )
    assert ret.returncode != 0
    states = by_id(ret.data)
    assert states["serverfix-preflight"]["result"] is False
    assert message in states["serverfix-preflight"]["comment"]
    assert "a\nb" not in str(ret.data)
    assert changed_ids(ret.data) == []
    assert all(res["result"] is False for sid, res in states.items())  # nothing else ran
    assert snapshot(integration_settings) == before


def test_masterless_apply_is_a_noop(salt_call_local):
    ret = salt_call_local.run("--local", "state.apply", "serverfix", "sync_mods=all")
    assert ret.returncode == 0, summary(ret)
    assert changed_ids(ret.data) == []


def test_salt_ssh_preview_and_apply_are_noops(salt_ssh_cli):
    for extra in (["test=True"], []):
        ret = salt_ssh_cli.run("state.apply", "serverfix", *extra)
        assert ret.returncode == 0, summary(ret)
        assert changed_ids(ret.data) == [] and not failed_ids(ret.data)


def test_config_change_restarts_redis(salt_cli, salt_minion):
    preview = salt_cli.run(
        "state.apply",
        "serverfix",
        'pillar={"serverfix": {"redis": {"maxmemory": "64mb"}}}',
        "test=True",
        minion_tgt=salt_minion.id,
    )
    assert changed_ids(preview.data) == [
        "serverfix-redis-config-edited",
        "serverfix-redis-service-running",
    ]
    old_pids = _redis_pids()
    ret = salt_cli.run(
        "state.apply",
        "serverfix",
        'pillar={"serverfix": {"redis": {"maxmemory": "64mb"}}}',
        minion_tgt=salt_minion.id,
    )
    assert ret.returncode == 0, summary(ret)
    assert changed_ids(ret.data) == [
        "serverfix-redis-config-edited",
        "serverfix-redis-service-running",
    ]
    changes = by_id(ret.data)["serverfix-redis-config-edited"]["changes"]
    assert list(changes) == ["maxmemory"] and changes["maxmemory"]["new"] == "64mb", changes
    new_pids = _redis_pids()
    assert new_pids and new_pids != old_pids  # restarted, not just "running"
