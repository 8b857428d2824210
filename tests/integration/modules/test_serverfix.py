"""
`salt-call serverfix.diagnose` / `serverfix.verify` as an operator runs them (masterless, real
salt-call processes): the table by default (the functions' ``__outputter__``), ``--out=json`` for
machines, the return code, and `state.apply serverfix.verify test=True` over the whole formula.

The host is the runbook's "before" server: nothing listens on the configured Redis port, the .env
has no queue keys, prisma-studio runs under pm2 (own PM2_HOME) next to the backend stand-in.
"No swap" comes from a file in /proc/swaps' format (swap is kernel-global; see
tests/support/diagnose.py).
"""

import json
import os
import subprocess
import sys
import time

import pytest
from saltfactories.utils import random_string

from tests.support.backend import BACKEND_APP, IDLE_APP, write_env
from tests.support.diagnose import fake_proc_swaps, problems
from tests.support.host import free_port
from tests.support.loader import merge_settings
from tests.support.paths import FILE_ROOTS
from tests.support.pm2 import Pm2Sandbox
from tests.support.returns import by_id

RUNBOOK_PROBLEMS = {
    "redis-not-running": "critical",
    "env-queue-config": "critical",
    "swap-missing": "warning",
    "pm2-unwanted-processes": "warning",
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("diagcli")
    env_file = write_env(workdir / "backend" / ".env", {})
    pm2 = Pm2Sandbox(workdir)
    pm2.start("intranet-backend", BACKEND_APP, env={"ENV_FILE": str(env_file)})
    pm2.start("prisma-studio", IDLE_APP, env={"ALLOC_MB": "32"})
    pm2.save()
    try:
        pm2.wait_log("intranet-backend", "Queue-System ist deaktiviert")
        yield {
            "pillar": {
                "dotenv": {"file": str(env_file)},
                "pm2": {"home": str(pm2.home), "bin": pm2.bin},
                "redis": {"port": free_port(), "service": "serverfix-diag-absent"},
                "swap": {"file": str(workdir / "swapfile"), "size": "32M"},
            },
            "swaps": fake_proc_swaps(workdir / "swaps-none"),
        }
    finally:
        pm2.kill()


@pytest.fixture(scope="module")
def salt_call(salt_factories, make_pillar, world):
    pillar_root = make_pillar("diagcli", world["pillar"])
    factory = salt_factories.salt_minion_daemon(
        random_string("diag-"),
        overrides={
            "file_client": "local",
            "file_roots": {"base": FILE_ROOTS},
            "pillar_roots": {"base": [str(pillar_root)]},
        },
    )
    cli = factory.salt_call_cli(timeout=120)
    ret = cli.run("--local", "saltutil.sync_all")
    assert ret.returncode == 0, ret
    return cli


def plain_salt_call(salt_call, *args):
    """salt-call without the factory's ``--out=json``: what the operator sees."""
    cmd = [
        sys.executable,
        salt_call.get_script_path(),
        f"--config-dir={salt_call.config_dir}",
        "--local",
        "--log-level=quiet",
        *args,
    ]
    start = time.perf_counter()
    ret = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=dict(os.environ, COLUMNS="120"),
    )
    return ret, time.perf_counter() - start


def test_diagnose_json_lists_the_runbooks_problems(salt_call, world):
    start = time.perf_counter()
    ret = salt_call.run("--local", "serverfix.diagnose", f"proc_swaps={world['swaps']}")
    wall = time.perf_counter() - start
    assert ret.returncode == 0, ret
    assert problems(ret.data) == RUNBOOK_PROBLEMS
    print(
        f"\nsalt-call serverfix.diagnose: {wall:.2f} s wall, {ret.data['duration_ms']} ms in the "
        "function"
    )


def test_diagnose_table_by_default(salt_call, world):
    ret, _ = plain_salt_call(salt_call, "serverfix.diagnose", f"proc_swaps={world['swaps']}")
    assert ret.returncode == 0, ret.stderr
    out = ret.stdout
    print("\n" + out)  # visible with -s: what the operator sees
    assert "serverfix.diagnose: problems found (2 critical, 2 warning" in out, out
    for finding in RUNBOOK_PROBLEMS:
        assert finding in out
    assert "CRITICAL  redis-not-running" in out and "fix:      state serverfix.redis" in out
    assert "evidence: " in out


def test_verify_fails_with_return_code_and_table(salt_call):
    ret, wall = plain_salt_call(salt_call, "serverfix.verify")
    assert ret.returncode == 1, (ret.stdout, ret.stderr)
    print("\n" + ret.stdout)
    assert "serverfix.verify: FAILED" in ret.stdout
    assert "FAIL      redis-ping" in ret.stdout and "PASS      pm2-online" in ret.stdout
    json_ret = salt_call.run("--local", "serverfix.verify")
    assert json_ret.returncode == 1 and json_ret.data["ok"] is False
    print(
        f"\nsalt-call serverfix.verify: {wall:.2f} s wall, {json_ret.data['duration_ms']} ms in "
        "the function"
    )


def test_formula_in_test_mode_reports_verify_without_failing(salt_call):
    ret = salt_call.run("--local", "state.apply", "serverfix.verify", "test=True")
    assert ret.returncode == 0, json.dumps(ret.data, indent=1)[:3000]
    states = by_id(ret.data)
    assert not [sid for sid, res in states.items() if res["result"] is False], states
    verified = states["serverfix-verified"]
    assert verified["result"] is None and verified["changes"] == {}
    assert verified["comment"].startswith("Would verify after the changes above")
    assert (
        max(res.get("__run_num__", 0) for res in states.values()) == verified["__run_num__"]
    )  # last


def test_salt_ssh_with_config(salt_ssh_cli, world):
    """salt-ssh runs modules on the target without the master's file server or pillar: the defaults
    travel with the custom modules (_utils); ``config`` gives the rest."""
    config = merge_settings(world["pillar"])
    ret = salt_ssh_cli.run(
        "serverfix.diagnose", "config=" + json.dumps(config), f"proc_swaps={world['swaps']}"
    )
    assert ret.returncode == 0, ret
    assert problems(ret.data) == RUNBOOK_PROBLEMS
    # salt-ssh gives plain module calls no pillar: the shipped defaults are used, the report says so
    bare = salt_ssh_cli.run("serverfix.verify")
    assert isinstance(bare.data, dict) and {c["id"] for c in bare.data["checks"]} >= {
        "redis-ping",
        "env-keys",
    }
    assert bare.data["settings"]["source"].startswith("defaults only")
