"""
The pm2 execution module through the real Salt loader, against real pm2 (tests/node) and the
stand-in apps (tests/apps), each test with its own PM2_HOME in a temp dir and no daemon left.
"""

import json
import os

import pytest
from salt.exceptions import CommandExecutionError

from tests.support.paths import node_tool
from tests.support.pm2 import alive, sandbox, system_user

pytestmark = [pytest.mark.destructive_test, pytest.mark.skip_if_not_root]

SECRET = "tok-9f8e7d6c5b4a"
PILLAR_PASSWORD = "pillar-pw-5678"


@pytest.fixture(scope="module")
def pillar_root(make_pillar):
    # a real pillar: Salt 3008's pillar.get would hand the module '**********' for these
    return make_pillar("test_pm2_module", {"redis": {"password": PILLAR_PASSWORD},
                                           "pm2": {"bin": node_tool("pm2")}})


@pytest.fixture
def box():
    with sandbox() as pm2box:
        yield pm2box


def _kw(box):
    return {"user": box.user, "pm2_home": str(box.home), "pm2_bin": box.bin}


def test_list_one_cached_jlist_names_only(modules, box):
    box.start("prisma-studio", env={"API_TOKEN": SECRET})
    box.start("worker", env={"API_TOKEN": SECRET})
    modules.pm2.calls(reset=True)
    procs = modules.pm2.list(**_kw(box))
    assert {p["name"] for p in procs} == {"prisma-studio", "worker"}
    studio = next(p for p in procs if p["name"] == "prisma-studio")
    assert studio["status"] == "online" and studio["pid"] > 0 and studio["memory"] > 0
    assert studio["pm_uptime"] > 1e12 and studio["out_log"].endswith("prisma-studio-out.log")
    assert "API_TOKEN" in studio["env_keys"] and "PM2_HOME" in studio["env_keys"]
    assert SECRET not in json.dumps(procs)  # names only, never values
    assert modules.pm2.status("worker", **_kw(box))["status"] == "online"
    assert modules.pm2.calls() == {"total": 1, "commands": ["jlist"]}  # the second read came from the cache
    modules.pm2.stop("worker", **_kw(box))
    assert modules.pm2.status("worker", **_kw(box))["status"] == "stopped"  # a change drops the cache
    assert modules.pm2.calls()["commands"] == ["jlist", "stop", "jlist"]


def test_no_daemon_read_from_dump_and_none_started(modules, box):
    box.start("prisma-studio")
    box.pm2("save")
    box.kill()
    modules.pm2.calls(reset=True)
    procs = modules.pm2.list(**_kw(box))
    assert [(p["name"], p["status"], p["source"]) for p in procs] == [("prisma-studio", "stopped", "dump")]
    assert modules.pm2.saved_names(box.user, str(box.home)) == ["prisma-studio"]
    assert modules.pm2.calls()["total"] == 0 and box.daemon_pid() is None
    with pytest.raises(CommandExecutionError, match="no pm2 daemon runs .* serverfix never starts one"):
        modules.pm2.restart("prisma-studio", **_kw(box))
    assert box.daemon_pid() is None


@pytest.mark.parametrize("name", ["all", "0", "12", "1e3", "0x1f", " ", "", "/studio/", "eco.config.js",
                                  "apps.json", "-s", "a\nb"])
def test_names_pm2_reads_as_something_else_are_refused(modules, name):
    assert modules.pm2.name_problem(name)
    with pytest.raises(CommandExecutionError, match="refusing pm2 process name"):
        modules.pm2.stop(name)


def test_namespace_name_refused(modules, box):
    box.start("api-1", namespace="intranet")
    box.start("api-2", namespace="intranet")
    assert "namespace" in modules.pm2.name_problem("intranet", **_kw(box))
    with pytest.raises(CommandExecutionError, match="pm2 namespace"):
        modules.pm2.delete("intranet", **_kw(box))
    assert {p["name"] for p in box.jlist()} == {"api-1", "api-2"}  # nothing was touched


def test_log_tail_reads_files_and_masks(modules, box, tmp_path):
    env_file = box.root / ".env"
    env_file.write_text("QUEUE_ENABLED=true\nAPP_CRASH_ON_QUEUE=1\nREDIS_HOST=127.0.0.1\nREDIS_PORT=6390\n"
                        "REDIS_PASSWORD=hunter2-redis-pw\n", encoding="utf-8")
    box.start_backend("intranet-backend", env_file, env={"SESSION_SECRET": "sess-0123456789"})
    modules.pm2.calls(reset=True)
    lines = modules.pm2.log_tail("intranet-backend", lines=20, **_kw(box))
    text = "\n".join(lines)
    assert "Redis connection failed" in text and "intranet stand-in started" in text
    assert "hunter2-redis-pw" not in text and "redis://:<secret>@127.0.0.1:6390" in text
    assert modules.pm2.mask("x sess-0123456789 y", user=box.user, pm2_home=str(box.home)) == "x <secret> y"
    # the pillar's Redis password, however the app prints it
    with open(modules.pm2.log_paths("intranet-backend", **_kw(box))[0], "a", encoding="utf-8") as log:
        log.write(f"auth failed with {PILLAR_PASSWORD} (plain)\n")
    tail = modules.pm2.log_tail("intranet-backend", lines=5, **_kw(box))
    assert "auth failed with <secret> (plain)" in tail and PILLAR_PASSWORD not in "\n".join(tail)
    assert modules.pm2.calls()["commands"] == ["jlist"]  # the lines come from the files, not `pm2 logs`


def test_banner_noise_before_json(modules, box):
    # a first call in a fresh PM2_HOME prints the banner and the daemon-spawn lines before the JSON
    out = box.pm2("jlist").stdout
    assert "Spawning PM2 daemon" in out and len(out.splitlines()) > 5
    assert modules.pm2.list(**_kw(box)) == []


def test_version_without_calling_pm2(modules, box):
    modules.pm2.calls(reset=True)
    assert modules.pm2.version(box.bin) == "7.0.4"
    assert modules.pm2.find_bin() == box.bin  # '' means the pillar's serverfix:pm2:bin, then a search
    assert modules.pm2.version() == "7.0.4"
    assert modules.pm2.calls()["total"] == 0 and box.daemon_pid() is None


def test_missing_pm2_names_the_pillar_key(modules, box):
    errors = modules.pm2.preflight("root", str(box.home), "/nonexistent/bin/pm2")
    assert any("serverfix:pm2:bin" in e and "/nonexistent/bin/pm2" in e for e in errors), errors
    with pytest.raises(CommandExecutionError, match="serverfix:pm2:bin"):
        modules.pm2.find_bin("/nonexistent/bin/pm2")
    assert any("user 'nobody-here' does not exist" in e for e in modules.pm2.preflight("nobody-here"))
    assert modules.pm2.preflight(**_kw(box)) == []


def test_non_root_owner_and_no_root_takeover(modules):
    with system_user() as user, sandbox(user) as box:
        kw = _kw(box)
        box.start("prisma-studio")
        box.pm2("save")
        owner_daemon = box.daemon_pid()
        # as the owner (runuser): the user's own daemon answers
        assert modules.pm2.status("prisma-studio", **kw)["status"] == "online"
        assert modules.pm2.preflight(**kw) == []
        # root pointed at the user's PM2_HOME is refused before any pm2 call
        errors = modules.pm2.preflight("root", str(box.home), box.bin)
        assert any("belongs to " + user in e for e in errors), errors
        with pytest.raises(CommandExecutionError, match="belongs to " + user):
            modules.pm2.list("root", str(box.home), box.bin, refresh=True)
        assert box.daemon_pid() == owner_daemon
        # the user's daemon down: reading spawns nothing (the trap: a root daemon in the user's home)
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
        errors = modules.pm2.preflight(**_kw(box))
        assert any("runs as root, not as serverfix:pm2:user" in e and "pm2 kill" in e for e in errors), errors
        with pytest.raises(CommandExecutionError, match="runs as root"):
            modules.pm2.list(**_kw(box))


def test_restart_update_env_brings_nothing_of_the_minion(modules, box, monkeypatch):
    # `--update-env` merges the CLI's environment into the app's: it must be clean and minimal
    monkeypatch.setenv("MINION_ONLY_SECRET", "leak-me-not")
    box.start("prisma-studio", env={"LANG": "de_DE.UTF-8"})
    before = box.procs("prisma-studio")[0]["pm2_env"]["env"]
    modules.pm2.restart("prisma-studio", **_kw(box))
    after = box.procs("prisma-studio")[0]["pm2_env"]["env"]
    assert "MINION_ONLY_SECRET" not in after and after["LANG"] == "de_DE.UTF-8"
    assert set(after) == set(before)
    assert box.procs("prisma-studio")[0]["pm2_env"]["restart_time"] == 1
