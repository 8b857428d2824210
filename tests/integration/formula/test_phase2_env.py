"""
Phase 2 as the operator runs it: ``salt-call --local state.apply serverfix.env`` (a real salt-call
process, its own config, ``--out=json``, ``-l debug`` and a debug log file).

Preview changes nothing (checksum), the real run writes exactly what npm dotenv reads back,
a second run reports zero changes, a value that cannot be written stops only Phase 2 with a
message, and the secrets appear nowhere: not in the JSON output, stderr, or the debug log.
Redis (Phase 1) is disabled in this pillar: the Phase 1 test owns port 6379.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from saltfactories.utils import random_string

from tests.support.host import IS_ROOT, sha256
from tests.support.paths import FILE_ROOTS

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="salt-call state runs need root")

SECRET = "Zq8-redis-pw-5521x"
EXTRA_SECRET = "salt-9c1f-extra-secret"
ENV_TEXT = (
    "# backend\r\nNODE_ENV=production\r\nREDIS_HOST=localhost # was ::1 first\r\n"
    'JWT_SECRET="jwt value #1"\r\nREDIS_PASSWORD=old-pw-77aa\r\n'
)
STATE_ID = "dotenv_|-serverfix-env-keys-present_|-{path}_|-present"
SALT_CALL = str(Path(sys.executable).parent / "salt-call")


@pytest.fixture(scope="module")
def env_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("env-salt-call") / ".env"
    path.write_bytes(ENV_TEXT.encode())
    path.chmod(0o640)
    return path


@pytest.fixture(scope="module")
def pillar_dir(make_pillar, env_file):
    return make_pillar("dotenv_salt_call", settings(env_file))


def settings(env_file, extra=None):
    return {
        "dotenv": {
            "file": str(env_file),
            "secret_keys": ["SESSION_SALT"],
            "extra": extra or {"SESSION_SALT": EXTRA_SECRET, "APP_NAME": "intranet"},
        },
        "redis": {"enabled": False, "password": SECRET},
        "remove_processes": [],
        "swap": {"enabled": False},
        "verify": {"enabled": False},
    }


@pytest.fixture(scope="module")
def salt_call(salt_factories, pillar_dir, tmp_path_factory):
    factory = salt_factories.salt_minion_daemon(
        random_string("dotenv-"),
        overrides={
            "file_client": "local",
            "file_roots": {"base": FILE_ROOTS},
            "pillar_roots": {"base": [str(pillar_dir)]},
        },
    )  # never started: only its config dir is used
    logs = tmp_path_factory.mktemp("dotenv-logs")

    def run(*args):
        log_file = logs / f"run{len(list(logs.iterdir()))}.log"
        proc = subprocess.run(
            [
                SALT_CALL,
                f"--config-dir={factory.config_dir}",
                "--local",
                "--out=json",
                "-l",
                "debug",
                f"--log-file={log_file}",
                "--log-file-level=debug",
                "--retcode-passthrough",
                "state.apply",
                "serverfix.env",
                "sync_mods=all",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        everything = (
            proc.stdout + proc.stderr + log_file.read_text(encoding="utf-8", errors="replace")
        )
        assert "[DEBUG   ]" in everything  # the debug log really was on
        for secret in (SECRET, EXTRA_SECRET, "old-pw-77aa", "jwt value #1"):
            assert secret not in everything, f"secret leaked in salt-call {args}"
        return proc.returncode, json.loads(proc.stdout)["local"]

    return run


def test_preview_apply_reapply(salt_call, env_file, npm_dotenv):
    state_id = STATE_ID.format(path=env_file)
    before = sha256(env_file)
    rc, ret = salt_call("test=True")
    assert rc == 0, ret
    assert sha256(env_file) == before  # test=True: byte-identical
    preview = ret[state_id]
    assert preview["result"] is None
    assert preview["changes"]["changed"] == ["REDIS_HOST", "REDIS_PASSWORD"]
    assert preview["changes"]["added"] == [
        "REDIS_PORT",
        "REDIS_DB",
        "QUEUE_ENABLED",
        "QUEUE_CONCURRENCY",
        "APP_NAME",
        "SESSION_SALT",
    ]
    assert preview["changes"]["values"]["SESSION_SALT"] == {"old": None, "new": "<secret>"}

    rc, ret = salt_call()
    assert rc == 0, ret
    applied = ret[state_id]
    assert applied["result"] is True
    assert {k: v for k, v in applied["changes"].items() if k != "backup"} == preview["changes"]
    assert Path(applied["changes"]["backup"]).read_bytes() == ENV_TEXT.encode()
    assert npm_dotenv.parse(env_file.read_bytes()) == {
        "NODE_ENV": "production",
        "REDIS_HOST": "127.0.0.1",
        "JWT_SECRET": "jwt value #1",
        "REDIS_PASSWORD": SECRET,
        "REDIS_PORT": "6379",
        "REDIS_DB": "0",
        "QUEUE_ENABLED": "true",
        "QUEUE_CONCURRENCY": "5",
        "APP_NAME": "intranet",
        "SESSION_SALT": EXTRA_SECRET,
    }
    assert (
        b"\r\nREDIS_HOST=127.0.0.1 # was ::1 first\r\n" in env_file.read_bytes()
    )  # CRLF and comment kept

    after = sha256(env_file)
    for args in (("test=True",), ()):
        rc, ret = salt_call(*args)
        assert rc == 0 and ret[state_id]["result"] is True and ret[state_id]["changes"] == {}, ret
    assert sha256(env_file) == after


def test_unwritable_value_stops_phase2_only(salt_call, make_pillar, env_file):
    make_pillar(
        "dotenv_salt_call", settings(env_file, extra={"SESSION_SALT": "a\rb\\nc" + EXTRA_SECRET})
    )
    before = sha256(env_file)
    try:
        rc, ret = salt_call()
    finally:
        make_pillar("dotenv_salt_call", settings(env_file))
    state = ret[STATE_ID.format(path=env_file)]
    assert rc == 2 and state["result"] is False
    assert state["comment"].startswith(
        "SESSION_SALT: cannot write this value so that npm dotenv reads it back"
    )
    assert (
        ret["serverfix_|-serverfix-preflight_|-serverfix-preflight_|-preflight"]["result"] is True
    )
    assert sha256(env_file) == before


def local_minion(make_pillar, pillar, tmp_path, synced=False):
    """A salt-call --local config dir in ``tmp_path`` with ``pillar``; returns the prefix."""
    root = make_pillar("dotenv_salt_call_show", pillar)
    conf = tmp_path / "minion"
    conf.write_text(
        yaml.safe_dump(
            {
                "id": "show",
                "root_dir": str(tmp_path),
                "file_client": "local",
                "file_roots": {"base": FILE_ROOTS},
                "pillar_roots": {"base": [str(root)]},
            }
        )
    )
    call = [SALT_CALL, f"--config-dir={tmp_path}", "--local", "--out=json", "-l", "quiet"]
    if synced:  # the preflight state renders its real form only where the custom modules are
        subprocess.run(call + ["saltutil.sync_all"], capture_output=True, check=True)
    return call


def show_sls(make_pillar, env_file, tmp_path, sls, synced=False):
    """``state.show_sls`` (rendering only) with Redis and verify enabled; returns the stdout."""
    pillar = settings(env_file)
    pillar["redis"]["enabled"] = pillar["verify"]["enabled"] = True
    call = local_minion(make_pillar, pillar, tmp_path, synced)
    return subprocess.run(
        call + ["state.show_sls", sls], capture_output=True, text=True, check=True
    ).stdout


def test_phase2_requires_phase1(salt_call, make_pillar, env_file, tmp_path):
    # with Redis enabled the env state waits for the whole Phase 1 sls
    data = json.loads(show_sls(make_pillar, env_file, tmp_path, "serverfix.env"))["local"][
        "serverfix-env-keys-present"
    ]
    requires = next(
        arg["require"] for arg in data["dotenv"] if isinstance(arg, dict) and "require" in arg
    )
    assert "serverfix-preflight" in requires and {"sls": "serverfix.redis"} in requires


def test_compiled_states_hold_pillar_keys_not_secrets(salt_call, make_pillar, env_file, tmp_path):
    # the password and the extra values are {"pillar": key} references, read when the state runs
    out = show_sls(make_pillar, env_file, tmp_path, "serverfix", synced=True)
    assert SECRET not in out and EXTRA_SECRET not in out
    data = json.loads(out)["local"]
    for state, function in (
        ("serverfix-preflight", "preflight"),
        ("serverfix-verified", "verified"),
    ):
        body = data[state]["serverfix"]
        assert function in body
        config = next(arg["config"] for arg in body if isinstance(arg, dict) and "config" in arg)
        assert config["redis"]["password"] == {"pillar": "serverfix:redis:password"}
        assert config["dotenv"]["extra"]["SESSION_SALT"] == {
            "pillar": "serverfix:dotenv:extra:SESSION_SALT"
        }
    values = next(
        arg["values"]
        for arg in data["serverfix-env-keys-present"]["dotenv"]
        if isinstance(arg, dict) and "values" in arg
    )
    assert values["REDIS_PASSWORD"] == {"pillar": "serverfix:redis:password"}
    assert values["SESSION_SALT"] == {"pillar": "serverfix:dotenv:extra:SESSION_SALT"}
    passwords = [
        arg["password"]
        for state in ("serverfix-redis-config-edited", "serverfix-redis-answers-ping")
        for arg in data[state]["redis_server"]
        if isinstance(arg, dict) and "password" in arg
    ]
    assert passwords == [{"pillar": "serverfix:redis:password"}] * 2


def test_preflight_checks_only_the_phases_in_the_run(salt_call, make_pillar, tmp_path):
    # no .env yet: a run of Phase 3 alone does not need one, a run with Phase 2 is stopped
    missing = tmp_path / "no-such-dir" / ".env"
    call = local_minion(make_pillar, settings(missing), tmp_path, synced=True)
    preflight = "serverfix_|-serverfix-preflight_|-serverfix-preflight_|-preflight"
    for sls, ok in (("serverfix.prisma_studio", True), ("serverfix.env", False)):
        proc = subprocess.run(
            call + ["--retcode-passthrough", "state.apply", sls, "test=True"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        state = json.loads(proc.stdout)["local"][preflight]
        assert (proc.returncode == 0) is ok and state["result"] is ok, (sls, state)
        assert (str(missing) in state["comment"]) is not ok, (sls, state)
