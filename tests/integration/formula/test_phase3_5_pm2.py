"""
Phases 3 and 5 through masterless ``salt-call --local`` and the real SLS files, against real pm2
run by a non-root owner (a user created for this test, with its own PM2_HOME), with the
stand-in prisma-studio and intranet-backend. Phase 2 (the .env) runs too: backend.sls needs it.

The story the operator lives: preview, apply without consent (prisma-studio gone for good, .env
edited, "RESTART PENDING"), apply again (still pending, nothing changes, one list read),
apply with consent (restart, ready lines), apply again (nothing to do, one list read). pm2 runs
through a wrapper that logs each CLI invocation: the call counts are measured from outside (the
list is read over the daemon's socket, no CLI call; the module's own count names it).
"""

import json
import shutil
import time

import pytest
from saltfactories.utils import random_string

from tests.support.backend import ENV_BEFORE, READY, write_env
from tests.support.host import sha256
from tests.support.paths import FILE_ROOTS
from tests.support.pm2 import LIST_CALL, owner_name, sandbox, system_user
from tests.support.returns import by_id, changed_ids

pytestmark = [pytest.mark.destructive_test, pytest.mark.skip_if_not_root]

APP = "intranet-backend"
CONSENT = 'pillar={"serverfix": {"backend": {"restart": true}}}'
PHASES = "serverfix.processes,serverfix.backend"


@pytest.fixture(scope="module")
def box():
    with system_user("sfint") as user, sandbox(user) as pm2box:
        pm2box.counting_bin()
        env_file = pm2box.root / "backend" / ".env"
        env_file.parent.mkdir()
        write_env(env_file, ENV_BEFORE, mtime=time.time() - 60)
        env_file.chmod(0o640)
        shutil.chown(env_file, user, user)
        pm2box.env_file = env_file
        pm2box.start("prisma-studio")
        pm2box.start_backend(APP, env_file)
        pm2box.wait_online(APP)
        pm2box.pm2("save")
        yield pm2box


@pytest.fixture(scope="module")
def salt_call(salt_factories, make_pillar, box):
    pillar_root = make_pillar(
        "pm2-phases",
        {
            # Phase 1 owns the host's Redis (its own tests cover it); the password still goes
            # into the .env
            "redis": {"enabled": False, "password": "hunter2-redis-pw"},
            "swap": {"enabled": False},
            "verify": {"enabled": False},
            "dotenv": {"file": str(box.env_file)},
            "pm2": {"user": box.user, "home": str(box.home), "bin": str(box.root / "bin" / "pm2")},
            "backend": {"ready_timeout": 20},
        },
    )
    factory = salt_factories.salt_minion_daemon(
        random_string("pm2-"),
        overrides={
            "file_client": "local",
            "file_roots": {"base": FILE_ROOTS},
            "pillar_roots": {"base": [str(pillar_root)]},
        },
    )
    cli = factory.salt_call_cli(timeout=300)
    ret = cli.run("--local", "saltutil.sync_all")
    assert ret.returncode == 0, ret
    return cli


def _apply(salt_call, box, *extra):
    box.calls(reset=True)
    ret = salt_call.run("--local", "--retcode-passthrough", "state.apply", PHASES, *extra)
    return ret, by_id(ret.data), box.calls()


def _snapshot(box):
    return {
        "apps": sorted((p["name"], p["pid"]) for p in box.jlist()),
        "dump": sorted(box.saved()),
        ".env": sha256(box.env_file),
    }


def test_preview_changes_nothing(salt_call, box):
    before = _snapshot(box)
    ret, states, calls = _apply(salt_call, box, "test=True")
    assert ret.returncode == 0, ret
    absent = states["serverfix-pm2-prisma-studio-absent"]
    assert absent["result"] is None and set(absent["changes"]) == {"process", "dump.pm2"}
    assert states["serverfix-env-keys-present"]["result"] is None
    restart = states["serverfix-backend-restarted"]
    # the watched Phase 2 would change the .env: the preview already says a restart will be pending
    assert restart["result"] is True and restart["comment"].startswith("RESTART PENDING"), restart
    assert "Phase 1/2 changed something in this run" in restart["comment"]
    assert calls == [] and _snapshot(box) == before  # the list: over the daemon's socket


def test_apply_without_consent(salt_call, box):
    pid = box.procs(APP)[0]["pid"]
    ret, states, calls = _apply(salt_call, box)
    assert ret.returncode == 0, ret
    assert changed_ids(ret.data) == [
        "serverfix-env-keys-present",
        "serverfix-pm2-prisma-studio-absent",
    ]
    restart = states["serverfix-backend-restarted"]
    assert (
        restart["comment"].startswith("RESTART PENDING")
        and CONSENT.split("=", 1)[1] in restart["comment"]
    )
    assert [p["name"] for p in box.jlist()] == [APP] and box.saved() == [APP]
    assert box.procs(APP)[0]["pid"] == pid  # never restarted without consent
    assert (
        box.daemon_pid() and owner_name(box.daemon_pid()) == box.user
    )  # root never took over the daemon
    print(f"\npm2 calls, real run of Phases 3+5 without consent: {len(calls)} {calls}")
    assert calls == ["stop", "delete", "save"]  # Phase 5 reads the list Phase 3 left


def test_rerun_is_a_noop_with_one_jlist(salt_call, box):
    ret, states, calls = _apply(salt_call, box)
    assert ret.returncode == 0 and changed_ids(ret.data) == [], ret
    assert states["serverfix-backend-restarted"]["comment"].startswith(
        "RESTART PENDING"
    )  # still pending
    print(f"\npm2 CLI calls, no-op run of Phases 3+5 (restart pending): {len(calls)} {calls}")
    assert calls == []  # the one list read asks the daemon's socket


def test_apply_with_consent_restarts_and_waits_for_ready_lines(salt_call, box):
    pid = box.procs(APP)[0]["pid"]
    ret, states, calls = _apply(salt_call, box, CONSENT)
    assert ret.returncode == 0, ret
    assert changed_ids(ret.data) == ["serverfix-backend-restarted"]
    restart = states["serverfix-backend-restarted"]
    assert restart["changes"]["pid"]["old"] == [pid] and "ready after" in restart["comment"], (
        restart
    )
    assert all(line in restart["comment"] for line in READY)
    assert box.procs(APP)[0]["pm2_env"]["status"] == "online"
    print(f"\npm2 calls, real run of Phases 3+5 with consent: {len(calls)} {calls}")
    assert calls == ["restart"]


def test_rerun_after_restart_is_a_noop_with_one_jlist(salt_call, box):
    ret, states, calls = _apply(salt_call, box, CONSENT, "--log-level=info")
    assert ret.returncode == 0 and changed_ids(ret.data) == [], ret
    # the module counts its own calls too, and says so in the minion log
    assert f"pm2: 1 call(s) so far in this run: {LIST_CALL}" in ret.stderr, ret.stderr[-3000:]
    assert "up to date" in states["serverfix-backend-restarted"]["comment"]
    print(f"\npm2 CLI calls, no-op run of Phases 3+5: {len(calls)} {calls}")
    assert calls == []
    # nothing of the app's environment or the .env leaks into the output or the log
    for secret in ("hunter2-redis-pw", "jwt-s3cr3t-value"):
        assert secret not in json.dumps(ret.data) and secret not in ret.stderr


def test_pm2_missing_stops_the_run_before_anything_changes(salt_call, box):
    before = _snapshot(box)
    ret, states, calls = _apply(
        salt_call, box, 'pillar={"serverfix": {"pm2": {"bin": "/opt/missing/bin/pm2"}}}'
    )
    assert ret.returncode != 0
    preflight = states["serverfix-preflight"]
    assert preflight["result"] is False and "serverfix:pm2:bin" in preflight["comment"], preflight
    assert "/opt/missing/bin/pm2" in preflight["comment"]
    assert changed_ids(ret.data) == [] and calls == [] and _snapshot(box) == before
