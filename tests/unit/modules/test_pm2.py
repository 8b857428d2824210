"""
The pure parts of the pm2 module: jlist JSON after any noise, environments stripped to key names,
secrets masked, names pm2 would read as something else (checked against Node's own isNaN),
the binary lookup and the clean command line. No pm2 daemon here.
"""

import json
import os
import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from salt.exceptions import CommandExecutionError

from tests.support.loader import import_salt_module
from tests.support.paths import MODULES_DIR

pm2 = import_salt_module(MODULES_DIR / "pm2.py", "serverfix_test_modules_pm2")

SPAWN_NOISE = ("\x1b[32m[PM2] \x1b[39mSpawning PM2 daemon with pm2_home=/tmp/x\n"
               "\x1b[32m[PM2] \x1b[39mPM2 Successfully daemonized\n")
OUT_OF_DATE = (">>>> In-memory PM2 is out-of-date, do:\n>>>> $ pm2 update\n"
               ">>>> In memory PM2 version: 5.3.1\n>>>> Local PM2 version: 7.0.4\n\n")
BANNER = "\n".join(["                        -------------", "__/\\\\\\\\\\\\\\\\\\\\\\\\\\____", "[PM2] banner line",
                    "                Start and Daemonize any application:", "                $ pm2 start app.js"])
RAW = [{
    "pid": 4242, "name": "intranet-backend", "pm_id": 0, "monit": {"memory": 73400320, "cpu": 1.5},
    "pm2_env": {"name": "intranet-backend", "namespace": "default", "pm_id": 0, "status": "online",
                "restart_time": 3, "pm_uptime": 1795991055467,
                "pm_out_log_path": "/root/.pm2/logs/intranet-backend-out.log",
                "pm_err_log_path": "/root/.pm2/logs/intranet-backend-error.log",
                "REDIS_PASSWORD": "top-level-copy-pw",
                "env": {"REDIS_PASSWORD": "hunter2-redis-pw", "DATABASE_URL": "postgres://u:dbpw1234@h/db",
                        "NODE_ENV": "production"}},
}]


@pytest.fixture
def configure_loader_modules():
    return {pm2: {"__pillar__": {}, "__context__": {}}}


@pytest.mark.parametrize("noise", ["", SPAWN_NOISE, BANNER + "\n" + SPAWN_NOISE, OUT_OF_DATE * 1,
                                   SPAWN_NOISE + OUT_OF_DATE])
def test_json_is_read_after_any_noise(noise):
    assert pm2._parse_jlist(noise + json.dumps(RAW) + "\n") == RAW


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x0b\x0c"
                                               "\x1c\x1d\x1e\x85\u2028\u2029"), max_size=60), max_size=8))
def test_json_survives_arbitrary_noise_lines(lines):
    stdout = "".join(line + "\n" for line in lines) + json.dumps(RAW) + "\n"
    assert pm2._parse_jlist(stdout) == RAW


def test_no_json_error_never_echoes_the_output():
    with pytest.raises(CommandExecutionError) as err:
        pm2._parse_jlist(SPAWN_NOISE + '[{"env": {"REDIS_PASSWORD": "hunter2-redis-pw"')
    assert "hunter2" not in str(err.value) and "bytes of output" in str(err.value)


def test_summary_keeps_key_names_only():
    summary = pm2._summary(RAW[0], "jlist")
    assert summary["env_keys"] == ["DATABASE_URL", "NODE_ENV", "REDIS_PASSWORD"]
    assert summary["memory"] == 73400320 and summary["pm_uptime"] == 1795991055467 and summary["pid"] == 4242
    text = json.dumps(summary)
    for secret in ("hunter2-redis-pw", "dbpw1234", "top-level-copy-pw"):
        assert secret not in text
    assert pm2._env_secrets(RAW[0]["pm2_env"]["env"]) == {"hunter2-redis-pw"}


def test_dump_entries_show_stopped():
    summary = pm2._summary(RAW[0]["pm2_env"], "dump")  # dump.pm2 holds pm2_env objects
    assert (summary["name"], summary["status"], summary["pid"], summary["source"]) == \
        ("intranet-backend", "stopped", 0, "dump")


@pytest.mark.parametrize("text, expected", [
    ("connect redis://:hunter2-redis-pw@127.0.0.1:6379", "connect redis://:<secret>@127.0.0.1:6379"),
    ("postgres://intranet:p4ss@db/x", "postgres://intranet:<secret>@db/x"),
    ("REDIS_PASSWORD=abc123 ok", "REDIS_PASSWORD=<secret> ok"),
    ('{"password": "s3cr3t", "user": "x"}', '{"password": "<secret>", "user": "x"}'),
    ("token: abcdef", "token: <secret>"),
    ("value hunter2-redis-pw inside", "value <secret> inside"),
    ("[Queue] ✅ Workers gestartet", "[Queue] ✅ Workers gestartet"),
])
def test_mask(text, expected):
    assert pm2.mask(text, ["hunter2-redis-pw", "ab"]) == expected


def test_node_agrees_which_names_are_ids():
    """pm2 treats a name as a process id when JavaScript's isNaN(name) is false: ask Node itself."""
    node = shutil.which("node")
    if not node:
        pytest.skip("node not installed (scripts/test.sh installs it)")
    names = ["12", " 12 ", "0x1f", "0o17", "0b101", "1e3", ".5", "5.", "-3", "+3", "Infinity", "-Infinity", "",
             " ", "\t", "1_000", "12a", "0x", "NaN", "prisma-studio", "intranet-backend", "v2", "1.2.3", "1e", "e3"]
    out = subprocess.run([node, "-e", "const n = JSON.parse(process.argv[1]);"
                          "console.log(JSON.stringify(n.map(x => !isNaN(x))))", json.dumps(names)],
                         capture_output=True, text=True, check=True)
    is_id = dict(zip(names, json.loads(out.stdout)))
    for name, numeric in is_id.items():
        problem = pm2.name_problem(name)
        assert ("process id" in problem) == numeric, (name, problem)


@pytest.mark.parametrize("name", ["all", "/stud.*/", "apps.json", "x.config.js", "a.yml", "-x", "-", "a\nb", 7])
def test_names_pm2_reads_otherwise(name):
    assert pm2.name_problem(name)


@pytest.mark.parametrize("name", ["prisma-studio", "intranet-backend", "api@2", "my app", "all-apps"])
def test_plain_names_pass(name):
    assert pm2.name_problem(name) == ""


def test_missing_pm2_names_the_pillar_key(tmp_path, monkeypatch):
    # a machine without pm2: the search directories are empty ones (no pm2 can be uninstalled here)
    monkeypatch.setattr(pm2, "SANE_PATH", [str(tmp_path)])
    monkeypatch.setattr(pm2, "USER_BIN_GLOBS", [])
    with pytest.raises(CommandExecutionError) as err:
        pm2.find_bin("", "root")
    assert "serverfix:pm2:bin" in str(err.value) and str(tmp_path) in str(err.value)


def test_nvm_directories_are_searched_newest_first(tmp_path, monkeypatch):
    for version in ("v18.20.4", "v20.11.1", "v9.11.2"):
        bin_dir = tmp_path / ".nvm" / "versions" / "node" / version / "bin"
        bin_dir.mkdir(parents=True)
        (bin_dir / "pm2").write_text("#!/bin/sh\n")
        (bin_dir / "pm2").chmod(0o755)
    monkeypatch.setattr(pm2, "SANE_PATH", [str(tmp_path / "empty")])
    monkeypatch.setattr(pm2, "USER_BIN_GLOBS", [str(tmp_path) + "/.nvm/versions/node/*/bin"])
    assert pm2.find_bin("", "root") == str(tmp_path / ".nvm/versions/node/v20.11.1/bin/pm2")


def test_command_line_is_clean_and_runs_as_the_owner(monkeypatch):
    monkeypatch.setenv("SALT_SECRET_FROM_MINION_ENV", "leak")
    argv = pm2._argv(["jlist"], "nobody", "/srv/pm2", "/opt/node/bin/pm2")
    if os.geteuid() == 0:
        assert argv[:4] == ["runuser", "-u", "nobody", "--"]
    env_part = argv[argv.index("-i") + 1:argv.index("/opt/node/bin/pm2")]
    assert [e.split("=")[0] for e in env_part] == ["HOME", "PATH", "PM2_HOME"]
    assert "PM2_HOME=/srv/pm2" in env_part and env_part[1].startswith("PATH=/opt/node/bin:")
    assert not any("leak" in a for a in argv)
