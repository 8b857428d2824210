"""
The salt-ssh wrapper ``_wrapper/serverfix.py``: ``salt-ssh <target> serverfix.verify`` and
``serverfix.diagnose`` with the target's pillar and no ``config=``, through a real sshd.

The pillar is not the shipped default: the .env lives at another path, Redis (our own
redis-server on a free port) has ``requirepass``, and ``dotenv:extra`` holds a token. The
reports must come from that path and that Redis (PING with the password -> PONG), and no secret
may appear in the CLI output, the ``-l debug`` log, the salt-ssh log file, any process's argv
sampled from /proc during the call (the master's ssh and the target's shells and salt-call are
processes of this machine), or a file left in the target's thin_dir.
"""

import os
import threading
import time
from pathlib import Path

import pytest
import salt.version
from saltfactories.utils import random_string

from tests.support.backend import write_env
from tests.support.diagnose import fake_proc_swaps, statuses
from tests.support.paths import FILE_ROOTS, NODE_BIN, REPO
from tests.support.redis import RedisServer

PASSWORD = "wr4pper-Redis-pw-7f3c"
TOKEN = "wr4pper-mail-token-91ad"  # serverfix:dotenv:extra, a secret by its key's name
BANNER = "wr4pper-banner-value-5e2b"  # serverfix:dotenv:extra, a plain value: still never in argv
SECRETS = (PASSWORD, TOKEN)
SSH_LOG = {}  # "path": the salt-ssh log file (Salt puts ssh_log_file under the master's root_dir)


class ArgvSampler(threading.Thread):
    """Every distinct ``/proc/<pid>/cmdline`` seen while running (sampled every few ms)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.seen = set()
        self.samples = 0
        self._done = threading.Event()

    def run(self):
        while not self._done.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as handle:
                        raw = handle.read()
                except OSError:
                    continue
                if raw:
                    self.seen.add(raw.replace(b"\0", b" ").decode("utf-8", "replace"))
            self.samples += 1
            time.sleep(0.005)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self.join(5)

    def hits(self, *values):
        return sorted({line[:200] for line in self.seen for value in values if value in line})


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("wrapper")


@pytest.fixture(scope="module")
def redis(workdir):
    with RedisServer(workdir, password=PASSWORD) as server:
        yield server


@pytest.fixture(scope="module")
def world(workdir, redis):
    env_file = write_env(
        workdir / "srv" / "intranet-api" / "config" / ".env",
        {
            "REDIS_HOST": "127.0.0.1",
            "REDIS_PORT": str(redis.port),
            "REDIS_PASSWORD": PASSWORD,
            "REDIS_DB": "0",
            "QUEUE_ENABLED": "true",
            "QUEUE_CONCURRENCY": "5",
            "MAIL_API_TOKEN": TOKEN,
            "APP_BANNER": BANNER,
        },
    )
    pm2_home = workdir / "pm2"
    pm2_home.mkdir()
    pillar = {
        "dotenv": {"file": str(env_file), "extra": {"MAIL_API_TOKEN": TOKEN, "APP_BANNER": BANNER}},
        "redis": {
            "port": redis.port,
            "password": PASSWORD,
            "service": "serverfix-wrapper-absent",
            "config": str(redis.conf),
        },
        "pm2": {"home": str(pm2_home), "bin": str(NODE_BIN / "pm2")},
        "swap": {"file": str(workdir / "swapfile"), "size": "32M"},
    }
    return {"env_file": env_file, "pillar": pillar, "swaps": fake_proc_swaps(workdir / "swaps")}


@pytest.fixture(scope="module")
def ssh_cli(salt_factories, sshd, make_pillar, world, workdir):
    known_hosts = workdir / "known_hosts"
    known_hosts.write_text("\n".join(sshd.get_host_keys()) + "\n", encoding="utf-8")
    overrides = {
        "file_roots": {"base": FILE_ROOTS},
        "pillar_roots": {"base": [str(make_pillar("wrapper", world["pillar"]))]},
        "known_hosts_file": str(known_hosts),
        "ssh_log_file": str(workdir / "salt-ssh.log"),
        "log_level_logfile": "debug",
    }
    master = salt_factories.salt_master_daemon(random_string("wrap-master-"), overrides=overrides)
    SSH_LOG["path"] = Path(master.config["root_dir"], *Path(overrides["ssh_log_file"]).parts[1:])
    if salt.version.__saltstack_version__.major >= 3007:
        # what an operator runs: the master syncs salt://_wrapper (formula/_wrapper) to its extmods
        ret = master.salt_run_cli(timeout=120).run("saltutil.sync_wrapper")
        assert ret.returncode == 0, ret
        assert "wrapper.serverfix" in ret.data, ret
    else:
        # Salt 3006 has no sync_wrapper runner and its salt-ssh ignores wrapper_dirs when it runs a
        # wrapper: the module goes where the runner would put it, the master's extmods/wrapper
        extmods = Path(master.config["extension_modules"]) / "wrapper"
        extmods.mkdir(parents=True, exist_ok=True)
        (extmods / "serverfix.py").symlink_to(REPO / "_wrapper" / "serverfix.py")
    roster = workdir / "roster"
    roster.write_text(
        "hetzner:\n  host: 127.0.0.1\n"
        f"  port: {sshd.listen_port}\n  user: root\n  priv: {sshd.client_key}\n"
        f"  thin_dir: {workdir}/thin\n"
        "  set_path: /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n",
        encoding="utf-8",
    )
    cli = master.salt_ssh_cli(
        timeout=300, roster_file=str(roster), target_host="hetzner", client_key=str(sshd.client_key)
    )
    ret = cli.run("test.ping")  # deploys the thin outside the measured calls
    assert ret.returncode == 0, ret
    return cli


def _assert_no_secret(ret, sampler, workdir, world):
    text = f"{ret.stdout}\n{ret.stderr}"
    assert not [s for s in SECRETS if s in text], (
        "a secret is in the salt-ssh output or its -l debug log"
    )
    log = SSH_LOG["path"].read_text(encoding="utf-8", errors="replace")
    assert "serverfix" in log  # the log file is written (debug level) ...
    assert not [s for s in SECRETS if s in log], "a secret is in the salt-ssh log file"
    assert sampler.samples > 50, sampler.samples
    assert any(
        "salt-call" in line or "state.pkg" in line for line in sampler.seen
    )  # ... the call was seen
    assert not sampler.hits(PASSWORD, TOKEN, BANNER), "a pillar value is in a process's argv"
    left = [
        str(path)
        for path in (workdir / "thin").rglob("*")
        if path.is_file() and any(s.encode() in path.read_bytes() for s in SECRETS)
    ]
    assert not left, f"a secret stays on the target: {left}"
    assert world["env_file"].exists()


def test_verify_uses_the_targets_pillar_without_config(ssh_cli, world, redis, workdir):
    with ArgvSampler() as sampler:
        ret = ssh_cli.run("-l", "debug", "serverfix.verify", f"proc_swaps={world['swaps']}")
    report = ret.data
    assert isinstance(report, dict) and report.get("function") == "verify", ret
    assert report["settings"]["source"] == "pillar"
    assert report["settings"]["env_file"] == str(world["env_file"])
    assert report["settings"]["redis_port"] == redis.port
    checks = {c["id"]: c for c in report["checks"]}
    # PING with the .env's password over the socket: only a right password gets PONG
    assert checks["redis-ping"]["status"] == "pass", checks["redis-ping"]
    assert checks["redis-ping"]["evidence"]["port"] == redis.port
    # the .env has every key the pillar wants, the password and the extra keys included
    assert checks["env-keys"]["status"] == "pass", checks["env-keys"]
    assert statuses(report)["redis-service"] == "fail"  # no such service here: a failing check ...
    # ... sets the return code (salt-ssh's CLI reports a failed call as 20, EX_AGGREGATE)
    assert ret.returncode != 0
    _assert_no_secret(ret, sampler, workdir, world)


def test_diagnose_uses_the_targets_pillar_without_config(ssh_cli, world, redis, workdir):
    with ArgvSampler() as sampler:
        ret = ssh_cli.run("-l", "debug", "serverfix.diagnose", f"proc_swaps={world['swaps']}")
    assert ret.returncode == 0, ret
    report = ret.data
    assert report["function"] == "diagnose" and report["settings"]["source"] == "pillar"
    assert report["settings"]["env_file"] == str(world["env_file"])
    ids = {f["id"] for f in report["findings"]}
    # the right Redis answered with the password, and the .env matches the pillar
    assert not ids & {
        "redis-not-running",
        "redis-auth-failed",
        "env-unreadable",
        "env-queue-config",
        "pillar-invalid",
    }, ids
    assert "swap-missing" in ids  # from the pillar's swap file and the given proc_swaps
    _assert_no_secret(ret, sampler, workdir, world)


def test_wrong_password_in_the_pillar_is_reported(ssh_cli, make_pillar, world, workdir):
    """The pillar really reaches the target: a pillar password that differs from the .env's is
    reported as a difference (masked), which the shipped defaults could not know."""
    pillar = dict(world["pillar"], redis=dict(world["pillar"]["redis"], password="an0ther-pw-x"))
    make_pillar("wrapper", pillar)
    try:
        ret = ssh_cli.run("serverfix.verify", f"proc_swaps={world['swaps']}")
    finally:
        make_pillar("wrapper", world["pillar"])
    checks = {c["id"]: c for c in ret.data["checks"]}
    assert checks["env-keys"]["status"] == "fail"
    assert (
        checks["env-keys"]["evidence"]["different"] == ["REDIS_PASSWORD"]
        or "REDIS_PASSWORD" in checks["env-keys"]["evidence"]["different"]
    ), checks["env-keys"]
    assert "an0ther-pw-x" not in ret.stdout and PASSWORD not in ret.stdout
    assert Path(world["env_file"]).read_text(encoding="utf-8").count(PASSWORD) == 1
