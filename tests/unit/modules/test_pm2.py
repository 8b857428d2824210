"""
The pure parts of the pm2 modules (_utils/serverfix_pm2.py, _modules/pm2.py, _modules/pm2_app.py):
jlist JSON after any noise, environments stripped to key names, secrets masked, names pm2 would
read as something else (checked against Node's own isNaN), the binary lookup without any pillar,
the clean command line, the error contract, and the .env rollback on files. No pm2 daemon here.
"""

import json
import os
import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from salt.exceptions import CommandExecutionError

from tests.support.loader import import_salt_module, utils_dunder
from tests.support.paths import MODULES_DIR, REPO, STATES_DIR, UTILS_DIR

pm2 = import_salt_module(MODULES_DIR / "pm2.py", "serverfix_test_modules_pm2")
pm2_app = import_salt_module(MODULES_DIR / "pm2_app.py", "serverfix_test_modules_pm2_app")
util = import_salt_module(UTILS_DIR / "serverfix_pm2.py", "serverfix_test_utils_pm2")
files = import_salt_module(UTILS_DIR / "serverfix_files.py", "serverfix_test_utils_files")
masking = import_salt_module(UTILS_DIR / "serverfix_mask.py", "serverfix_test_utils_mask")

SPAWN_NOISE = (
    "\x1b[32m[PM2] \x1b[39mSpawning PM2 daemon with pm2_home=/tmp/x\n"
    "\x1b[32m[PM2] \x1b[39mPM2 Successfully daemonized\n"
)
OUT_OF_DATE = (
    ">>>> In-memory PM2 is out-of-date, do:\n>>>> $ pm2 update\n"
    ">>>> In memory PM2 version: 5.3.1\n>>>> Local PM2 version: 7.0.4\n\n"
)
BANNER = "\n".join(
    [
        "                        -------------",
        "__/\\\\\\\\\\\\\\\\\\\\\\\\\\____",
        "[PM2] banner line",
        "                Start and Daemonize any application:",
        "                $ pm2 start app.js",
    ]
)
RAW = [
    {
        "pid": 4242,
        "name": "intranet-backend",
        "pm_id": 0,
        "monit": {"memory": 73400320, "cpu": 1.5},
        "pm2_env": {
            "name": "intranet-backend",
            "namespace": "default",
            "pm_id": 0,
            "status": "online",
            "restart_time": 3,
            "pm_uptime": 1795991055467,
            "pm_out_log_path": "/root/.pm2/logs/intranet-backend-out.log",
            "pm_err_log_path": "/root/.pm2/logs/intranet-backend-error.log",
            "REDIS_PASSWORD": "top-level-copy-pw",
            "env": {
                "REDIS_PASSWORD": "hunter2-redis-pw",
                "DATABASE_URL": "postgres://u:dbpw1234@h/db",
                "NODE_ENV": "production",
            },
        },
    }
]


def _utils():
    return utils_dunder("serverfix_pm2", "serverfix_files", "serverfix_mask", "serverfix_errors")


@pytest.fixture
def configure_loader_modules():
    # a pillar with the formula's keys: the generic modules must not read it
    pillar = {
        "serverfix": {"pm2": {"bin": "/pillar/bin/pm2"}, "redis": {"password": "pillar-pw-5678"}}
    }
    return {
        pm2: {"__pillar__": pillar, "__context__": {}, "__utils__": _utils()},
        pm2_app: {"__salt__": {}, "__utils__": _utils()},
    }


@pytest.mark.parametrize(
    "noise",
    ["", SPAWN_NOISE, BANNER + "\n" + SPAWN_NOISE, OUT_OF_DATE * 1, SPAWN_NOISE + OUT_OF_DATE],
)
def test_json_is_read_after_any_noise(noise):
    assert util.parse_jlist(noise + json.dumps(RAW) + "\n") == RAW


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.text(
            alphabet=st.characters(
                blacklist_categories=("Cs",),
                blacklist_characters="\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029",
            ),
            max_size=60,
        ),
        max_size=8,
    )
)
def test_json_survives_arbitrary_noise_lines(lines):
    stdout = "".join(line + "\n" for line in lines) + json.dumps(RAW) + "\n"
    assert util.parse_jlist(stdout) == RAW


def test_no_json_error_never_echoes_the_output():
    with pytest.raises(CommandExecutionError) as err:
        util.parse_jlist(SPAWN_NOISE + '[{"env": {"REDIS_PASSWORD": "hunter2-redis-pw"')
    assert "hunter2" not in str(err.value) and "bytes of output" in str(err.value)


def test_summary_keeps_key_names_only():
    summary = util.summary(RAW[0], "jlist")
    assert summary["env_keys"] == ["DATABASE_URL", "NODE_ENV", "REDIS_PASSWORD"]
    assert (
        summary["memory"] == 73400320
        and summary["pm_uptime"] == 1795991055467
        and summary["pid"] == 4242
    )
    text = json.dumps(summary)
    for secret in ("hunter2-redis-pw", "dbpw1234", "top-level-copy-pw"):
        assert secret not in text
    assert masking.env_secrets(RAW[0]["pm2_env"]["env"]) == {"hunter2-redis-pw"}


def test_dump_entries_show_stopped():
    summary = util.summary(RAW[0]["pm2_env"], "dump")  # dump.pm2 holds pm2_env objects
    assert (summary["name"], summary["status"], summary["pid"], summary["source"]) == (
        "intranet-backend",
        "stopped",
        0,
        "dump",
    )


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "connect redis://:hunter2-redis-pw@127.0.0.1:6379",
            "connect redis://:<secret>@127.0.0.1:6379",
        ),
        ("postgres://intranet:p4ss@db/x", "postgres://intranet:<secret>@db/x"),
        ("REDIS_PASSWORD=abc123 ok", "REDIS_PASSWORD=<secret> ok"),
        ('{"password": "s3cr3t", "user": "x"}', '{"password": "<secret>", "user": "x"}'),
        ("token: abcdef", "token: <secret>"),
        ("value hunter2-redis-pw inside", "value <secret> inside"),
        ("[Queue] ✅ Workers gestartet", "[Queue] ✅ Workers gestartet"),
    ],
)
def test_mask(text, expected):
    assert masking.text(text, ["hunter2-redis-pw", "ab"]) == expected
    assert pm2.mask(text, ["hunter2-redis-pw", "ab"]) == expected


def test_mask_masks_only_what_it_is_given():
    # the pillar's Redis password is not looked up: callers pass the resolved value
    assert pm2.mask("auth pillar-pw-5678 x") == "auth pillar-pw-5678 x"
    assert pm2.mask("auth pillar-pw-5678 x", ["pillar-pw-5678"]) == "auth <secret> x"


def test_node_agrees_which_names_are_ids():
    """pm2 treats a name as a process id when JavaScript's isNaN(name) is false: ask Node itself."""
    node = shutil.which("node")
    if not node:
        pytest.skip("node not installed (scripts/test.sh installs it)")
    names = [
        "12",
        " 12 ",
        "0x1f",
        "0o17",
        "0b101",
        "1e3",
        ".5",
        "5.",
        "-3",
        "+3",
        "Infinity",
        "-Infinity",
        "",
        " ",
        "\t",
        "1_000",
        "12a",
        "0x",
        "NaN",
        "prisma-studio",
        "intranet-backend",
        "v2",
        "1.2.3",
        "1e",
        "e3",
    ]
    out = subprocess.run(
        [
            node,
            "-e",
            "const n = JSON.parse(process.argv[1]);"
            "console.log(JSON.stringify(n.map(x => !isNaN(x))))",
            json.dumps(names),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    is_id = dict(zip(names, json.loads(out.stdout), strict=True))
    for name, numeric in is_id.items():
        problem = util.name_problem(name)
        assert ("process id" in problem) == numeric, (name, problem)


@pytest.mark.parametrize(
    "name", ["all", "/stud.*/", "apps.json", "x.config.js", "a.yml", "-x", "-", "a\nb", 7]
)
def test_names_pm2_reads_otherwise(name):
    problem = util.name_problem(name)
    assert problem
    with pytest.raises(CommandExecutionError, match="refusing pm2 process name") as err:
        pm2.check_name(name)
    assert err.value.info == {"errors": [problem]}


@pytest.mark.parametrize(
    "name", ["prisma-studio", "intranet-backend", "api@2", "my app", "all-apps"]
)
def test_plain_names_pass(name):
    assert util.name_problem(name) == "" and pm2.check_name(name) is True


def test_missing_pm2_names_the_argument(tmp_path, monkeypatch):
    # a machine without pm2: the search directories are empty ones (no pm2 can be uninstalled here)
    monkeypatch.setattr(pm2, "SANE_PATH", [str(tmp_path)])
    monkeypatch.setattr(pm2, "USER_BIN_GLOBS", [])
    with pytest.raises(CommandExecutionError) as err:
        pm2.find_bin("", "root")
    assert "pm2_bin" in str(err.value) and str(tmp_path) in str(err.value)
    assert "serverfix" not in str(err.value) and "/pillar/bin/pm2" not in str(err.value)
    with pytest.raises(CommandExecutionError, match="pm2_bin '/nonexistent/pm2' is not an exec"):
        pm2.find_bin("/nonexistent/pm2")


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
    env_part = argv[argv.index("-i") + 1 : argv.index("/opt/node/bin/pm2")]
    assert [e.split("=")[0] for e in env_part] == ["HOME", "PATH", "PM2_HOME"]
    assert "PM2_HOME=/srv/pm2" in env_part and env_part[1].startswith("PATH=/opt/node/bin:")
    assert not any("leak" in a for a in argv)


def test_preflight_raises_every_problem_with_its_argument():
    with pytest.raises(CommandExecutionError) as err:
        pm2.preflight("nobody-here-sf", "/nonexistent/pm2-home", "/nonexistent/pm2")
    errors = err.value.info["errors"]
    assert errors == [
        "user 'nobody-here-sf' does not exist; pass the user that runs pm2 "
        '(ps -o user= -p "$(cat ~/.pm2/pm2.pid)")'
    ]
    # str() of an exception with info appends it: callers read info["errors"]
    assert err.value.info["arguments"] == ["user"] and str(err.value).startswith(errors[0])
    with pytest.raises(CommandExecutionError) as err:
        pm2.preflight("root", "/nonexistent/pm2-home", "/nonexistent/pm2")
    assert err.value.info["arguments"] == ["pm2_bin"], err.value.info
    assert "pm2_bin '/nonexistent/pm2'" in err.value.info["errors"][0]


def test_no_formula_pillar_key_in_the_pm2_modules():
    for path in [
        MODULES_DIR / "pm2.py",
        MODULES_DIR / "pm2_app.py",
        STATES_DIR / "pm2.py",
        UTILS_DIR / "serverfix_pm2.py",
    ]:
        assert "serverfix:" not in path.read_text(encoding="utf-8"), path
    assert (REPO / "formula" / "serverfix" / "processes.sls").exists()


# _backups returns one path per content given: the unpacking below matches by construction
# pylint: disable=unbalanced-tuple-unpacking
def _backups(env_file, contents):
    made = []
    for i, text in enumerate(contents):
        path = f"{env_file}.serverfix-2026010{i}T000000.bak"
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.utime(path, (1000 + i, 1000 + i))
        made.append(path)
    return made


def test_previous_env_is_the_oldest_differing_backup_since_the_start(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("NEW=1\n", encoding="utf-8")
    made = _backups(env_file, ["OLDER=1\n", "RAN=1\n", "NEW=1\n"])
    old, ran_with, same = made[0], made[1], made[2]
    assert pm2_app.previous_env(str(env_file), 1000.5) == ran_with  # `old` predates the start
    assert pm2_app.previous_env(str(env_file), 999) == old
    assert pm2_app.previous_env(str(env_file), 1001.5) is None  # only a copy of the current file
    assert same and pm2_app.rollback_env(str(env_file), 5000) == {"env_restored_from": None}
    assert env_file.read_text(encoding="utf-8") == "NEW=1\n"
    with pytest.raises(CommandExecutionError, match="cannot read"):
        pm2_app.previous_env(str(tmp_path / "missing.env"), 0)


def test_rollback_env_restores_and_keeps_the_failing_file(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("QUEUE_ENABLED=true\n", encoding="utf-8")
    env_file.chmod(0o640)
    ran_with = _backups(env_file, ["OLDER=1\n", "QUEUE_ENABLED=false\n"])[1]
    backup_dir = str(tmp_path / "backups")
    done = pm2_app.rollback_env(str(env_file), 1000.5, backup_keep=3, backup_dir=backup_dir)
    assert done["env_restored_from"] == ran_with
    assert env_file.read_text(encoding="utf-8") == "QUEUE_ENABLED=false\n"
    assert env_file.stat().st_mode & 0o777 == 0o640
    # the failing copy goes to the backup directory too, not into the app directory
    assert done["failed_env_saved_as"].startswith(f"{backup_dir}{tmp_path}/.env.failed-")
    with open(done["failed_env_saved_as"], encoding="utf-8") as handle:
        assert handle.read() == "QUEUE_ENABLED=true\n"
    # the failing copy has its own tag: never taken for "the .env the app ran with"
    assert done["failed_env_saved_as"] not in files.list_backups(
        str(env_file), backup_dir=backup_dir
    )


def _backup_in(backup_dir, env_file, stamp, text, mtime):
    path = f"{backup_dir}{env_file}.serverfix-{stamp}.bak"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.utime(path, (mtime, mtime))
    return path


def test_previous_env_finds_backups_in_the_dir_and_those_left_next_to_the_file(tmp_path):
    env_file = tmp_path / "app" / ".env"
    env_file.parent.mkdir()
    env_file.write_text("NEW=1\n", encoding="utf-8")
    backup_dir = str(tmp_path / "backups")
    # an earlier version's backup next to the file, and none in the directory: it is found
    [beside] = _backups(env_file, ["BESIDE=1\n"])
    assert pm2_app.previous_env(str(env_file), 999, backup_dir) == beside
    # a backup in the directory made after the app's start wins over an older one beside it
    newer = _backup_in(backup_dir, env_file, "20260201T000000", "RAN=1\n", 2000)
    assert pm2_app.previous_env(str(env_file), 1500, backup_dir) == newer
    # by time, wherever it is: the oldest differing one since the start
    assert pm2_app.previous_env(str(env_file), 999, backup_dir) == beside
    done = pm2_app.rollback_env(str(env_file), 1500, backup_dir=backup_dir)
    assert done["env_restored_from"] == newer and env_file.read_text() == "RAN=1\n"
    assert os.path.exists(beside)  # never moved or deleted


def test_redis_started_without_a_redis_module_or_host():
    assert pm2_app.redis_started("") is None
    assert pm2_app.redis_started("127.0.0.1", 6379, "pw") is None  # redis_server not loaded


@pytest.mark.parametrize(
    "procs, why",
    [
        ([], "it left pm2's list"),
        ([{"status": "errored", "restart_time": 1, "pm_id": 0}], "it is errored"),
        ([{"status": "online", "restart_time": 3, "pm_id": 0}], "it crashed after the restart"),
        ([{"status": "online", "restart_time": 2, "pm_id": 0}], ""),
        # caught between two of pm2's restarts of a crash loop: still a crash (CI saw "stopped")
        (
            [{"status": "stopped", "restart_time": 4, "pm_id": 0}],
            "it crashed after the restart (pm2 restarted it again); it is stopped",
        ),
    ],
)
def test_what_counts_as_down_after_a_restart(procs, why):
    assert pm2_app._failure(procs, {0: 1}).startswith(why)


# ---------------------------------------------------------------- issue 12


def test_restart_report_masks_every_value_the_formula_did_not_define(tmp_path, monkeypatch):
    # item 13: the log lines of a failed restart carry no dotenv:extra / .env value, no URL password
    dotenv_util = import_salt_module(UTILS_DIR / "serverfix_dotenv.py", "serverfix_test_dotenv")
    env_file = tmp_path / ".env"
    env_file.write_text(
        "REDIS_HOST=127.0.0.1\nSMTP_PASS=smtp-pw-4711\nDB_PASS=db-pw-0815\n"
        "DATABASE_URL=postgres://app:url-pw-99@host/db\nMY_API_TOKEN=tok-123456\nPASSWD=pw-pass-1\n",
        encoding="utf-8",
    )
    monkeypatch.setitem(
        pm2_app.__salt__, "dotenv.read", lambda path: dotenv_util.parse(open(path, "rb").read())
    )
    monkeypatch.setitem(pm2_app.__salt__, "pm2.mask", pm2.mask)
    log = (
        "connecting to 127.0.0.1\n"
        "smtp login failed for smtp-pw-4711 / db-pw-0815\n"
        "db error postgres://app:url-pw-99@host/db tok-123456 pw-pass-1\n"
        "other: mongodb://u:p@ss:w@rd@mongo:27017/x\n"
    )
    tail = pm2_app._masked_tail(log, [], str(env_file), [], "root", "/root/.pm2")
    for secret in ("smtp-pw-4711", "db-pw-0815", "url-pw-99", "tok-123456", "pw-pass-1", "w@rd"):
        assert secret not in tail
    assert "connecting to 127.0.0.1" in tail and "mongodb://u:<secret>@mongo:27017/x" in tail


def test_unsave_keeps_bytes_that_are_not_utf8(tmp_path):
    # item 5: a Latin-1 byte in another app's saved env: the dump is read, kept byte for byte
    home = tmp_path / "pm2"
    home.mkdir()
    other = b'{"name": "other-app", "env": {"GREETING": "Gr\xfc\xdfe \xff"}}'
    studio = b'{"name": "prisma-studio", "env": {}}'
    (home / "dump.pm2").write_bytes(b"[" + other + b", " + studio + b"]")
    (home / "dump.pm2.bak").write_bytes(b"[" + studio + b"]")
    assert pm2.saved_names(user="root", pm2_home=str(home)) == ["other-app", "prisma-studio"]
    assert pm2.unsave("prisma-studio", user="root", pm2_home=str(home)) == 1
    data = (home / "dump.pm2").read_bytes()
    assert b'"GREETING": "Gr\xfc\xdfe \xff"' in data and b"prisma-studio" not in data
    assert json.loads(data.decode("utf-8", "surrogateescape"))[0]["name"] == "other-app"
    summary = util.summary(json.loads(data.decode("utf-8", "surrogateescape"))[0], "dump")
    json.dumps(summary).encode("utf-8")  # nothing unencodable comes back
