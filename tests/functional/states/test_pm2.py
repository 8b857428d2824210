"""
The pm2 states through the real loader, against real pm2 and the stand-in apps:
``pm2.absent`` (Phase 3) and ``pm2.restarted_ready`` (Phase 5). pm2 runs through a wrapper that
logs every invocation, so each test also counts the pm2 CLI calls from outside the module (a list
read is no CLI call: it asks the daemon over its socket, tests/functional/modules/test_pm2_rpc.py).
"""

import time

import pytest

from tests.support.backend import ENV_AFTER_VALUES, ENV_BEFORE, READY, write_env
from tests.support.pm2 import sandbox
from tests.support.redis import RedisServer

pytestmark = [pytest.mark.destructive_test, pytest.mark.skip_if_not_root]

ALLOW_HINT = 'pillar=\'{"serverfix": {"backend": {"restart": true}}}\''
APP = "intranet-backend"
PILLAR_PASSWORD = "pillar-redis-pw-4321"


@pytest.fixture(scope="module")
def pillar_root(make_pillar):
    return make_pillar("test_pm2_states", {"redis": {"password": PILLAR_PASSWORD}})


@pytest.fixture
def box():
    with sandbox(counting=True) as pm2box:
        yield pm2box


def _names(box):
    return sorted(p["name"] for p in box.jlist())


# ---------------------------------------------------------------- absent


def test_absent_for_good_test_mode_first(states, box):
    box.start("prisma-studio")
    box.start("other-app")
    box.pm2("save")
    box.calls(reset=True)

    ret = states.pm2.absent("prisma-studio", test=True, **box.module_kwargs())
    assert ret.result is None and set(ret.changes) == {"process", "dump.pm2"}, ret
    assert box.calls() == []  # test mode: no pm2 CLI call at all (the list: over the socket)
    assert _names(box) == ["other-app", "prisma-studio"] and "prisma-studio" in box.saved()

    box.calls(reset=True)
    ret = states.pm2.absent("prisma-studio", **box.module_kwargs())
    assert ret.result is True and set(ret.changes) == {"process", "dump.pm2"}, ret
    assert box.calls() == ["stop", "delete", "save"]
    assert _names(box) == ["other-app"] and box.saved() == ["other-app"]

    # what a reboot with `pm2 startup` does: a new daemon resurrects the saved list
    box.kill()
    box.pm2("resurrect")
    box.wait_online("other-app")
    assert _names(box) == ["other-app"]

    box.calls(reset=True)
    ret = states.pm2.absent("prisma-studio", **box.module_kwargs())
    assert ret.result is True and ret.changes == {} and "already absent" in ret.comment
    assert box.calls() == []


def test_absent_last_app_saves_the_empty_list(states, box):
    box.start("prisma-studio")
    box.pm2("save")
    ret = states.pm2.absent("prisma-studio", **box.module_kwargs())
    assert ret.result is True, ret
    assert (
        box.saved() == []
    )  # plain `pm2 save` skips an empty list: the dump would keep prisma-studio
    box.kill()
    box.pm2("resurrect")
    assert _names(box) == []


def test_absent_without_daemon_edits_only_the_dump(states, box):
    box.start("prisma-studio")
    box.start("other-app")
    box.pm2("save")
    box.kill()
    mode = (box.home / "dump.pm2").stat().st_mode & 0o777
    box.calls(reset=True)

    ret = states.pm2.absent("prisma-studio", test=True, **box.module_kwargs())
    assert ret.result is None and set(ret.changes) == {"dump.pm2"}
    ret = states.pm2.absent("prisma-studio", **box.module_kwargs())
    assert ret.result is True and set(ret.changes) == {"dump.pm2"}, ret
    assert box.calls() == [] and box.daemon_pid() is None  # no pm2 call, no daemon started
    assert box.saved() == ["other-app"] and (box.home / "dump.pm2").stat().st_mode & 0o777 == mode
    backups = list(box.home.glob("dump.pm2.serverfix-*.bak"))
    assert len(backups) == 1 and backups[0].stat().st_mode & 0o777 == 0o600
    box.pm2("resurrect")
    box.wait_online("other-app")
    assert _names(box) == ["other-app"]


def test_absent_never_changes_other_apps_saved_state(states, box):
    box.start("prisma-studio")
    box.start("other-app")
    box.pm2("save")
    box.pm2("delete", "other-app")  # saved but not running: `pm2 save` would drop it from the dump
    box.calls(reset=True)
    ret = states.pm2.absent("prisma-studio", **box.module_kwargs())
    assert ret.result is True and "dump.pm2 only" in ret.comment, ret
    assert box.calls() == ["stop", "delete"]
    assert box.saved() == ["other-app"]


def test_absent_refuses_a_namespace(states, box):
    box.start("studio", namespace="tools")
    box.calls(reset=True)
    ret = states.pm2.absent("tools", **box.module_kwargs())
    assert ret.result is False and "namespace" in ret.comment
    assert box.calls() == [] and _names(box) == ["studio"]


# ---------------------------------------------------------------- restarted_ready


@pytest.fixture
def backend(box):
    """The stand-in backend running with the 'before' .env (queue off)."""
    env_file = box.root / "backend" / ".env"
    env_file.parent.mkdir()
    write_env(env_file, ENV_BEFORE, mtime=time.time() - 60)
    yield env_file


def _start(box, env_file, **kwargs):
    box.start_backend(APP, env_file, **kwargs)
    return box.wait_online(APP)[0]["pid"]


def _rkw(box, env_file, ready=None, env=None, **extra):
    """The arguments backend.sls passes: pm2's, and the ready/env/redis groups."""
    kw = dict(
        box.module_kwargs(),
        ready=dict({"patterns": READY, "timeout": 15}, **(ready or {})),
        env=dict({"file": str(env_file), "managed_keys": list(ENV_AFTER_VALUES)}, **(env or {})),
    )
    kw.update(extra)
    return kw


def _phase2(modules, env_file):
    """Phase 2 as the dotenv module does it: backup, then the keys written in place."""
    changes = modules.dotenv.set(str(env_file), ENV_AFTER_VALUES, secret_keys=["REDIS_PASSWORD"])
    assert changes.get("backup"), changes


def test_restart_needs_consent_and_stays_pending(states, modules, box, backend):
    pid = _start(box, backend)
    ret = states.pm2.restarted_ready(APP, **_rkw(box, backend))
    assert ret.result is True and ret.changes == {} and "up to date" in ret.comment, ret

    _phase2(modules, backend)
    for _ in range(
        2
    ):  # pending survives from run to run: decided from pm2's start time and the .env
        box.calls(reset=True)
        ret = states.pm2.restarted_ready(APP, **_rkw(box, backend))
        assert ret.result is True and ret.changes == {}, ret
        assert ret.comment.startswith("RESTART PENDING") and ALLOW_HINT in ret.comment
        assert str(backend) + " changed at" in ret.comment
        assert box.calls() == [] and box.procs(APP)[0]["pid"] == pid

    ret = states.pm2.restarted_ready(APP, test=True, **_rkw(box, backend, allowed=True))
    assert ret.result is None and ret.changes["restarted"] == APP, ret
    assert box.procs(APP)[0]["pid"] == pid

    box.calls(reset=True)
    ret = states.pm2.restarted_ready(APP, **_rkw(box, backend, allowed=True))
    assert ret.result is True and ret.changes["restarted"] == APP, ret
    assert ret.changes["pid"]["old"] == [pid] and ret.changes["pid"]["new"] != [pid]
    assert box.calls() == ["restart"]  # the readiness polls read the list over the socket
    out_log = box.procs(APP)[0]["pm2_env"]["pm_out_log_path"]
    assert all(line in open(out_log, encoding="utf-8").read() for line in READY)

    ret = states.pm2.restarted_ready(APP, **_rkw(box, backend, allowed=True))
    assert ret.result is True and ret.changes == {} and "up to date" in ret.comment, ret


def test_old_ready_lines_do_not_count(states, box, backend):
    write_env(
        backend,
        ENV_BEFORE.replace("QUEUE_ENABLED=false", "QUEUE_ENABLED=true"),
        mtime=time.time() - 60,
    )
    _start(box, backend)
    out_log = box.procs(APP)[0]["pm2_env"]["pm_out_log_path"]
    deadline = time.monotonic() + 10
    while not all(line in open(out_log, encoding="utf-8").read() for line in READY):
        assert time.monotonic() < deadline, "the stand-in did not log its ready lines"
        time.sleep(0.2)
    write_env(
        backend, ENV_BEFORE
    )  # queue off now: after a restart the ready lines do not come again
    ret = states.pm2.restarted_ready(
        APP, **_rkw(box, backend, allowed=True, ready={"timeout": 3, "rollback": False})
    )
    assert ret.result is False, ret
    assert "ready lines not seen within 3s" in ret.comment and "Rollback is off" in ret.comment
    assert box.procs(APP)[0]["pm2_env"]["status"] == "online"  # up, just not ready: left as it is


def test_crash_after_restart_rolls_back(states, modules, box, backend):
    _start(box, backend, crash_on_queue=True)
    _phase2(modules, backend)  # queue on: this stand-in dies at start, printing its Redis URL
    began = time.monotonic()
    ret = states.pm2.restarted_ready(APP, **_rkw(box, backend, allowed=True))
    elapsed = time.monotonic() - began
    assert ret.result is False, ret
    assert "did NOT come up after the restart" in ret.comment and "crashed" in ret.comment
    assert "Redis connection failed: redis://:<secret>@127.0.0.1:6379" in ret.comment
    assert ENV_AFTER_VALUES["REDIS_PASSWORD"] not in str(ret.raw)
    rollback = ret.changes["rollback"]
    assert rollback["recovered"] is True, ret.comment
    assert backend.read_text(encoding="utf-8") == ENV_BEFORE  # the .env the app ran with
    assert "QUEUE_ENABLED=true" in open(rollback["failed_env_saved_as"], encoding="utf-8").read()
    first = box.wait_online(APP)[0]
    time.sleep(1.2)
    again = box.procs(APP)[0]
    assert (
        again["pid"] == first["pid"]
        and again["pm2_env"]["restart_time"] == first["pm2_env"]["restart_time"]
    )
    assert ".env.failed-" in rollback["failed_env_saved_as"]
    print(
        "\nrollback: failed restart detected -> app recovered in "
        f"{rollback['seconds_to_recover']}s "
        f"(whole state {elapsed:.1f}s)"
    )
    assert rollback["seconds_to_recover"] < 10

    # the next run edits the .env again: the rollback must pick the .env the app ran with again,
    # never the failing copy it kept the last time
    _phase2(modules, backend)
    ret = states.pm2.restarted_ready(APP, **_rkw(box, backend, allowed=True))
    assert ret.result is False and ret.changes["rollback"]["recovered"] is True, ret
    assert backend.read_text(encoding="utf-8") == ENV_BEFORE


def test_shadowed_env_fails_or_warns(states, modules, box, backend):
    # started from a shell that had QUEUE_ENABLED set: pm2 keeps it, dotenv will not override it
    pid = _start(box, backend, env={"QUEUE_ENABLED": "false"})
    _phase2(modules, backend)
    box.calls(reset=True)
    ret = states.pm2.restarted_ready(APP, **_rkw(box, backend, allowed=True))
    assert (
        ret.result is False
        and "sets QUEUE_ENABLED" in ret.comment
        and "Not restarting" in ret.comment
    )
    assert box.calls() == [] and box.procs(APP)[0]["pid"] == pid

    ret = states.pm2.restarted_ready(
        APP, **_rkw(box, backend, allowed=True, env={"shadowed": "warn"}, ready={"patterns": []})
    )
    assert ret.result is True and ret.changes["restarted"] == APP, ret
    assert any("QUEUE_ENABLED" in w for w in ret.warnings), ret.raw


def test_app_not_managed(states, box):
    box.start("other-app")
    assert states.pm2.restarted_ready(APP, **box.module_kwargs()).result is True
    ret = states.pm2.restarted_ready(APP, allowed=True, **box.module_kwargs())
    assert ret.result is False and "not managed" in ret.comment


def test_redis_started_after_the_app_makes_restart_pending(states, box, backend):
    _start(box, backend)
    time.sleep(1.5)  # Redis reports its uptime in whole seconds
    server = RedisServer(box.root).start()
    port = server.port
    try:
        ret = states.pm2.restarted_ready(
            APP, **_rkw(box, backend, redis={"host": "127.0.0.1", "port": port})
        )
        assert ret.result is True and ret.comment.startswith("RESTART PENDING"), ret
        assert "Redis started at" in ret.comment
    finally:
        server.stop()


def test_redis_password_is_a_pillar_reference_read_at_run_time(states, box, backend):
    """backend.sls passes {"pillar": "serverfix:redis:password"}: the state resolves it and asks
    Redis with it (a wrong or missing password: Redis cannot be asked, so no reason from it)."""
    _start(box, backend)
    time.sleep(1.5)  # Redis reports its uptime in whole seconds
    server = RedisServer(box.root, password=PILLAR_PASSWORD).start()
    port = server.port
    try:
        ref = {"pillar": "serverfix:redis:password"}
        ret = states.pm2.restarted_ready(
            APP, **_rkw(box, backend, redis={"host": "127.0.0.1", "port": port, "password": ref})
        )
        assert ret.result is True and "Redis started at" in ret.comment, ret
        assert PILLAR_PASSWORD not in str(ret.raw)
        ret = states.pm2.restarted_ready(
            APP, **_rkw(box, backend, redis={"host": "127.0.0.1", "port": port})
        )
        assert ret.result is True and "up to date" in ret.comment, ret
    finally:
        server.stop()


def test_unknown_group_key_and_mod_watch(states, box, backend):
    _start(box, backend)
    ret = states.pm2.restarted_ready(APP, **_rkw(box, backend, ready={"timeuot": 3}))
    assert ret.result is False and "ready: unknown key(s) timeuot" in ret.comment
    ret = states.pm2.mod_watch(APP, sfun="restarted_ready", **_rkw(box, backend))
    assert ret["result"] is True and ret["comment"].startswith("RESTART PENDING"), ret
    assert "Phase 1/2 changed something in this run" in ret["comment"]
    assert states.pm2.mod_watch(APP, sfun="nope")["result"] is False
