"""
The pm2 and pm2_app execution modules through the real Salt loader, against real pm2 (tests/node)
and the stand-in apps (tests/apps), each test with its own PM2_HOME in a temp dir and no daemon
left. The pillar holds the formula's pm2 and Redis keys: the generic modules must ignore them.
"""

import json
import os
import time

import pytest
from salt.exceptions import CommandExecutionError

from tests.support.backend import ENV_AFTER_VALUES, ENV_BEFORE, READY, env_after, write_env
from tests.support.host import free_port
from tests.support.paths import node_tool
from tests.support.pm2 import LIST_CALL, alive, sandbox, system_user
from tests.support.redis import RedisServer

pytestmark = [pytest.mark.destructive_test, pytest.mark.skip_if_not_root]

SECRET = "tok-9f8e7d6c5b4a"
PILLAR_PASSWORD = "pillar-pw-5678"


@pytest.fixture(scope="module")
def pillar_root(make_pillar):
    # the formula's keys in a real pillar: the pm2 modules take these as arguments, never from here
    return make_pillar(
        "test_pm2_module",
        {"redis": {"password": PILLAR_PASSWORD}, "pm2": {"bin": node_tool("pm2")}},
    )


@pytest.fixture
def box():
    with sandbox() as pm2box:
        yield pm2box


def test_list_one_cached_jlist_names_only(modules, box):
    box.start("prisma-studio", env={"API_TOKEN": SECRET})
    box.start("worker", env={"API_TOKEN": SECRET})
    modules.pm2.calls(reset=True)
    procs = modules.pm2.list(**box.module_kwargs())
    assert {p["name"] for p in procs} == {"prisma-studio", "worker"}
    studio = next(p for p in procs if p["name"] == "prisma-studio")
    assert studio["status"] == "online" and studio["pid"] > 0 and studio["memory"] > 0
    assert studio["pm_uptime"] > 1e12 and studio["out_log"].endswith("prisma-studio-out.log")
    assert "API_TOKEN" in studio["env_keys"] and "PM2_HOME" in studio["env_keys"]
    assert SECRET not in json.dumps(procs)  # names only, never values
    assert modules.pm2.status("worker", **box.module_kwargs())["status"] == "online"
    assert modules.pm2.calls() == {
        "total": 1,
        "commands": [LIST_CALL],
    }  # the second read came from the cache
    modules.pm2.stop("worker", **box.module_kwargs())
    assert (
        modules.pm2.status("worker", **box.module_kwargs())["status"] == "stopped"
    )  # a change drops the cache
    assert modules.pm2.calls()["commands"] == [LIST_CALL, "stop", LIST_CALL]


def test_after_change_refresh_asks_pm2_only_when_the_run_changed_something(modules, box):
    # the verify state at the end of a run: a no-op run needs no second jlist
    box.start("prisma-studio")
    box.start("worker")
    modules.pm2.calls(reset=True)
    modules.pm2.list(**box.module_kwargs())
    modules.pm2.list(refresh="after_change", **box.module_kwargs())
    assert modules.pm2.calls()["commands"] == [LIST_CALL]
    modules.pm2.delete(
        "prisma-studio", **box.module_kwargs()
    )  # a change: the final read asks pm2 again
    procs = modules.pm2.list(refresh="after_change", **box.module_kwargs())
    assert [p["name"] for p in procs] == ["worker"]
    assert modules.pm2.calls()["commands"] == [LIST_CALL, "delete", LIST_CALL]


def test_no_daemon_read_from_dump_and_none_started(modules, box):
    box.start("prisma-studio")
    box.pm2("save")
    box.kill()
    modules.pm2.calls(reset=True)
    procs = modules.pm2.list(**box.module_kwargs())
    assert [(p["name"], p["status"], p["source"]) for p in procs] == [
        ("prisma-studio", "stopped", "dump")
    ]
    assert modules.pm2.saved_names(box.user, str(box.home)) == ["prisma-studio"]
    assert modules.pm2.calls()["total"] == 0 and box.daemon_pid() is None
    with pytest.raises(
        CommandExecutionError, match="no pm2 daemon runs .* serverfix never starts one"
    ):
        modules.pm2.restart("prisma-studio", **box.module_kwargs())
    assert box.daemon_pid() is None


@pytest.mark.parametrize(
    "name",
    [
        "all",
        "0",
        "12",
        "1e3",
        "0x1f",
        " ",
        "",
        "/studio/",
        "eco.config.js",
        "apps.json",
        "-s",
        "a\nb",
    ],
)
def test_names_pm2_reads_as_something_else_are_refused(modules, name):
    with pytest.raises(CommandExecutionError, match="refusing pm2 process name") as err:
        modules.pm2.check_name(name)
    assert len(err.value.info["errors"]) == 1
    with pytest.raises(CommandExecutionError, match="refusing pm2 process name"):
        modules.pm2.stop(name)


def test_namespace_name_refused(modules, box):
    box.start("api-1", namespace="intranet")
    box.start("api-2", namespace="intranet")
    with pytest.raises(CommandExecutionError) as err:
        modules.pm2.check_name("intranet", **box.module_kwargs())
    assert "namespace" in err.value.info["errors"][0]
    with pytest.raises(CommandExecutionError, match="pm2 namespace"):
        modules.pm2.delete("intranet", **box.module_kwargs())
    assert {p["name"] for p in box.jlist()} == {"api-1", "api-2"}  # nothing was touched


def test_log_tail_reads_files_and_masks(modules, box, tmp_path):
    env_file = box.root / ".env"
    env_file.write_text(
        "QUEUE_ENABLED=true\nAPP_CRASH_ON_QUEUE=1\nREDIS_HOST=127.0.0.1\nREDIS_PORT=6390\n"
        "REDIS_PASSWORD=hunter2-redis-pw\n",
        encoding="utf-8",
    )
    box.start_backend("intranet-backend", env_file, env={"SESSION_SECRET": "sess-0123456789"})
    modules.pm2.calls(reset=True)
    lines = modules.pm2.log_tail("intranet-backend", lines=20, **box.module_kwargs())
    text = "\n".join(lines)
    assert "Redis connection failed" in text and "intranet stand-in started" in text
    assert "hunter2-redis-pw" not in text and "redis://:<secret>@127.0.0.1:6390" in text
    assert (
        modules.pm2.mask("x sess-0123456789 y", user=box.user, pm2_home=str(box.home))
        == "x <secret> y"
    )
    # the Redis password the caller passes, however the app prints it (the pillar is not read)
    with open(
        modules.pm2.log_paths("intranet-backend", **box.module_kwargs())[0], "a", encoding="utf-8"
    ) as log:
        log.write(f"auth failed with {PILLAR_PASSWORD} (plain)\n")
    tail = modules.pm2.log_tail(
        "intranet-backend", lines=5, secrets=[PILLAR_PASSWORD], **box.module_kwargs()
    )
    assert "auth failed with <secret> (plain)" in tail and PILLAR_PASSWORD not in "\n".join(tail)
    assert f"auth failed with {PILLAR_PASSWORD} (plain)" in modules.pm2.log_tail(
        "intranet-backend", lines=5, **box.module_kwargs()
    )
    # the lines come from the files, not `pm2 logs`
    assert modules.pm2.calls()["commands"] == [LIST_CALL]


def test_banner_noise_before_json(modules, box):
    # a first call in a fresh PM2_HOME prints the banner and the daemon-spawn lines before the JSON
    out = box.pm2("jlist").stdout
    assert "Spawning PM2 daemon" in out and len(out.splitlines()) > 5
    assert modules.pm2.list(**box.module_kwargs()) == []


def test_version_without_calling_pm2(modules, box):
    modules.pm2.calls(reset=True)
    assert modules.pm2.version(box.bin) == "7.0.4"
    assert modules.pm2.find_bin(box.bin) == box.bin
    # '' searches the usual places only: the pillar's serverfix:pm2:bin is not read
    try:
        assert modules.pm2.find_bin() != box.bin
    except CommandExecutionError as exc:
        assert "pm2_bin" in str(exc)
    assert modules.pm2.calls()["total"] == 0 and box.daemon_pid() is None


def _preflight_errors(modules, *args, **kwargs):
    with pytest.raises(CommandExecutionError) as err:
        modules.pm2.preflight(*args, **kwargs)
    info = err.value.info
    assert len(info["errors"]) == len(info["arguments"]) and str(err.value).startswith(
        info["errors"][0]
    )
    return list(zip(info["arguments"], info["errors"], strict=True))


def test_missing_pm2_names_the_argument(modules, box):
    errors = _preflight_errors(modules, "root", str(box.home), "/nonexistent/bin/pm2")
    assert any(a == "pm2_bin" and "pm2_bin '/nonexistent/bin/pm2'" in e for a, e in errors), errors
    assert not any("serverfix" in e for _, e in errors)
    with pytest.raises(CommandExecutionError, match="pm2_bin '/nonexistent/bin/pm2'"):
        modules.pm2.find_bin("/nonexistent/bin/pm2")
    assert _preflight_errors(modules, "nobody-here") == [
        (
            "user",
            "user 'nobody-here' does not exist; pass the user that runs pm2 "
            '(ps -o user= -p "$(cat ~/.pm2/pm2.pid)")',
        )
    ]
    assert modules.pm2.preflight(**box.module_kwargs()) is True


def test_non_root_owner_and_no_root_takeover(modules):
    with system_user() as user, sandbox(user) as box:
        kw = box.module_kwargs()
        box.start("prisma-studio")
        box.pm2("save")
        owner_daemon = box.daemon_pid()
        # as the owner (runuser): the user's own daemon answers
        assert modules.pm2.status("prisma-studio", **kw)["status"] == "online"
        assert modules.pm2.preflight(**kw) is True
        # root pointed at the user's PM2_HOME is refused before any pm2 call
        errors = _preflight_errors(modules, "root", str(box.home), box.bin)
        assert any(a == "pm2_home" and "belongs to " + user in e for a, e in errors), errors
        with pytest.raises(CommandExecutionError, match="belongs to " + user):
            modules.pm2.list("root", str(box.home), box.bin, refresh=True)
        assert box.daemon_pid() == owner_daemon
        # the user's daemon down: reading spawns nothing (the trap: a root daemon in their home)
        box.kill()
        procs = modules.pm2.list(**kw, refresh=True)
        assert [p["source"] for p in procs] == ["dump"] and box.daemon_pid() is None
        assert not any(os.stat(p).st_uid == 0 for p in box.home.iterdir())


def test_root_daemon_in_user_home_is_named(modules):
    with system_user() as user, sandbox(user) as box:
        box.start("prisma-studio")
        box.kill()
        # reproduce the trap by hand: root runs pm2 against the user's PM2_HOME
        box.pm2("jlist", as_user="root")
        rogue = box.daemon_pid()
        assert rogue and alive(rogue)
        errors = _preflight_errors(modules, **box.module_kwargs())
        assert any(
            a == "user" and "runs as root, not as user" in e and "pm2 kill" in e for a, e in errors
        ), errors
        with pytest.raises(CommandExecutionError, match="runs as root"):
            modules.pm2.list(**box.module_kwargs())


def test_restart_update_env_brings_nothing_of_the_minion(modules, box, monkeypatch):
    # `--update-env` merges the CLI's environment into the app's: it must be clean and minimal
    monkeypatch.setenv("MINION_ONLY_SECRET", "leak-me-not")
    box.start("prisma-studio", env={"LANG": "de_DE.UTF-8"})
    before = box.procs("prisma-studio")[0]["pm2_env"]["env"]
    modules.pm2.restart("prisma-studio", **box.module_kwargs())
    after = box.procs("prisma-studio")[0]["pm2_env"]["env"]
    assert "MINION_ONLY_SECRET" not in after and after["LANG"] == "de_DE.UTF-8"
    assert set(after) == set(before)
    assert box.procs("prisma-studio")[0]["pm2_env"]["restart_time"] == 1


# ---------------------------------------------------------------- pm2_app: restart, wait, roll back


def _backend(box, crash_on_queue=False):
    env_file = box.root / "backend" / ".env"
    env_file.parent.mkdir()
    write_env(env_file, ENV_BEFORE, mtime=time.time() - 60)
    box.start_backend("intranet-backend", env_file, crash_on_queue=crash_on_queue)
    started = box.wait_online("intranet-backend")[0]["pm2_env"]["pm_uptime"] / 1000
    return env_file, started


def _phase2(modules, env_file):
    changes = modules.dotenv.set(str(env_file), ENV_AFTER_VALUES, secret_keys=["REDIS_PASSWORD"])
    assert changes.get("backup"), changes


def test_restart_reasons_from_the_env_file_and_the_status(modules, box):
    env_file, _ = _backend(box)
    kw = box.module_kwargs()
    assert modules.pm2_app.restart_reasons("intranet-backend", str(env_file), **kw) == []
    assert modules.pm2_app.restart_reasons("not-there", str(env_file), **kw) == []
    _phase2(modules, env_file)
    modules.pm2.calls(reset=True)
    reasons = modules.pm2_app.restart_reasons("intranet-backend", str(env_file), **kw)
    assert len(reasons) == 1 and reasons[0].startswith(f"{env_file} changed at"), reasons
    assert modules.pm2.calls()["total"] <= 1  # one jlist at most (none when cached)
    box.pm2("stop", "intranet-backend")
    assert modules.pm2.list(**kw, refresh=True)[0]["status"] == "stopped"
    assert modules.pm2_app.restart_reasons("intranet-backend", "", **kw) == [
        "the app is stopped, not online"
    ]


def test_restart_and_wait_sees_only_new_ready_lines(modules, box):
    env_file, _ = _backend(box)
    write_env(env_file, env_after())  # queue on: the stand-in logs the ready lines after a restart
    modules.pm2.calls(reset=True)
    outcome = modules.pm2_app.restart_and_wait("intranet-backend", READY, 15, **box.module_kwargs())
    assert outcome["ok"] is True and outcome["missing"] == [] and outcome["log"] == "", outcome
    assert outcome["pids"] and outcome["pids"] == sorted(
        p["pid"] for p in box.procs("intranet-backend")
    )
    assert modules.pm2.calls()["commands"][:2] == [LIST_CALL, "restart"]
    # restarted again with the same .env: the old ready lines are in the log, but must not count
    write_env(env_file, ENV_BEFORE)
    outcome = modules.pm2_app.restart_and_wait("intranet-backend", READY, 3, **box.module_kwargs())
    assert outcome["ok"] is False and outcome["why"].startswith("ready lines not seen within 3s")


def test_restart_and_wait_reports_a_crash_masked(modules, box):
    env_file, _ = _backend(box, crash_on_queue=True)
    write_env(env_file, env_after())
    outcome = modules.pm2_app.restart_and_wait(
        "intranet-backend",
        READY,
        15,
        secrets=["x-extra-pw"],
        env_file=str(env_file),
        **box.module_kwargs(),
    )
    # pm2 shows the crashing app as errored, or stopped between its restarts: never ready
    assert outcome["ok"] is False and any(
        word in outcome["why"] for word in ("crashed", "errored", "stopped")
    ), outcome
    assert "Redis connection failed: redis://:<secret>@127.0.0.1:6379" in outcome["log"], outcome
    assert ENV_AFTER_VALUES["REDIS_PASSWORD"] not in json.dumps(outcome)


def test_rollback_restores_the_env_the_app_ran_with(modules, box):
    env_file, started = _backend(box, crash_on_queue=True)
    _phase2(modules, env_file)
    failed = modules.pm2_app.restart_and_wait("intranet-backend", READY, 15, **box.module_kwargs())
    assert failed["ok"] is False, failed
    report = modules.pm2_app.rollback(
        "intranet-backend", str(env_file), started, 15, 5, **box.module_kwargs()
    )
    assert report["recovered"] is True, report
    assert env_file.read_text(encoding="utf-8") == ENV_BEFORE
    assert ".env.failed-" in report["failed_env_saved_as"] and report["seconds_to_recover"] < 10
    assert box.procs("intranet-backend")[0]["pm2_env"]["status"] == "online"
    # nothing newer to restore: no restart at all
    modules.pm2.calls(reset=True)
    assert modules.pm2_app.rollback(
        "intranet-backend", str(env_file), time.time() + 60, **box.module_kwargs()
    ) == {"recovered": False, "env_restored_from": None}
    assert modules.pm2.calls()["total"] == 0


def test_redis_started_asks_redis_with_the_given_password(modules, tmp_path):
    server = RedisServer(tmp_path, password=PILLAR_PASSWORD).start()
    port = server.port
    try:
        started = modules.pm2_app.redis_started("127.0.0.1", port, PILLAR_PASSWORD)
        assert started is not None and abs(started - time.time()) < 5
        assert (
            modules.pm2_app.redis_started("127.0.0.1", port) is None
        )  # NOAUTH: the pillar is not read
        assert modules.pm2_app.redis_started("127.0.0.1", free_port(), PILLAR_PASSWORD) is None
    finally:
        server.stop()
