"""
Integration layer: real Salt daemons and CLIs started by pytest-salt-factories on this machine.

- ``salt_cli`` / ``salt_minion``: a real salt-master and salt-minion
  (``salt <id> state.apply serverfix``).
- ``salt_call_local``: masterless ``salt-call --local`` with its own config (never a daemon).
- ``salt_ssh_cli``: real ``salt-ssh`` through a real sshd on 127.0.0.1 (agentless, as the
  operator works).

The pillar (``integration_pillar``) points every phase at this test's own temp paths, so applying
the whole formula here touches only Redis (Phase 1) for real; swap and the final verify are covered
by their own tests and the replica host.
"""

import os
import shutil

import pytest
from saltfactories.utils import random_string

from tests.support.daemons import started_master, started_minion
from tests.support.paths import FILE_ROOTS, NODE_BIN

ENV_TEXT = (
    "# intranet backend settings (test copy)\n"
    "NODE_ENV=production\n"
    'DATABASE_URL="postgresql://intranet:p%40ss#w0rd@127.0.0.1:5432/intranet?schema=public"\n'
    "JWT_SECRET=s3cr3t-jwt-value\n"
)


@pytest.fixture(scope="package")
def integration_workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("integ")


@pytest.fixture(scope="package")
def integration_settings(integration_workdir):
    """The ``serverfix`` pillar for runs on this machine: real Redis, all else in temp paths."""
    env_file = integration_workdir / "backend" / ".env"
    env_file.parent.mkdir(parents=True, exist_ok=True)
    env_file.write_text(ENV_TEXT, encoding="utf-8")
    env_file.chmod(0o640)
    pm2_home = integration_workdir / "pm2"
    pm2_home.mkdir(exist_ok=True)
    return {
        "dotenv": {"file": str(env_file)},
        "pm2": {"home": str(pm2_home), "bin": str(NODE_BIN / "pm2")},
        "swap": {"enabled": False},
        "verify": {"enabled": False},
    }


@pytest.fixture(scope="package")
def integration_pillar(make_pillar, integration_settings):
    return make_pillar("integration", integration_settings)


@pytest.fixture(scope="package")
def salt_master(salt_factories, integration_pillar):
    with started_master(
        salt_factories,
        "master",
        {
            "file_roots": {"base": FILE_ROOTS},
            "pillar_roots": {"base": [str(integration_pillar)]},
        },
    ) as master:
        yield master


@pytest.fixture(scope="package")
def salt_minion(salt_master):
    with started_minion(salt_master, "minion") as minion:
        yield minion


@pytest.fixture(scope="package")
def salt_cli(salt_master):
    return salt_master.salt_cli(timeout=300)


@pytest.fixture(scope="package")
def salt_call_local(salt_factories, integration_pillar):
    factory = salt_factories.salt_minion_daemon(
        random_string("local-"),
        overrides={
            "file_client": "local",
            "file_roots": {"base": FILE_ROOTS},
            "pillar_roots": {"base": [str(integration_pillar)]},
        },
    )
    return factory.salt_call_cli(timeout=300)


@pytest.fixture(scope="package")
def sshd(salt_factories):
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # normally systemd's RuntimeDirectory
    factory = salt_factories.get_sshd_daemon(
        script_name=shutil.which("sshd") or "/usr/sbin/sshd",
        sshd_config_dict={
            "StrictModes": "no",
            "UsePAM": "no",
            "LogLevel": "INFO",
            # salt-ssh copies the thin with scp, which speaks SFTP: without this line it hangs
            "Subsystem": "sftp /usr/lib/openssh/sftp-server",
        },
    )
    with factory.started():
        yield factory


@pytest.fixture(scope="package")
def salt_ssh_cli(salt_factories, sshd, integration_pillar, integration_workdir):
    known_hosts = integration_workdir / "known_hosts"
    known_hosts.write_text("\n".join(sshd.get_host_keys()) + "\n", encoding="utf-8")
    master = (
        salt_factories.salt_master_daemon(  # salt-ssh only reads the master config: never started
            random_string("ssh-master-"),
            overrides={
                "file_roots": {"base": FILE_ROOTS},
                "pillar_roots": {"base": [str(integration_pillar)]},
                "known_hosts_file": str(known_hosts),
            },
        )
    )
    roster = integration_workdir / "roster"
    roster.write_text(
        "hetzner:\n  host: 127.0.0.1\n"
        f"  port: {sshd.listen_port}\n  user: root\n  priv: {sshd.client_key}\n"
        f"  thin_dir: {integration_workdir}/thin\n"
        # a pyenv shim first on PATH breaks salt-ssh's shell shim: use the system python3
        "  set_path: /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n",
        encoding="utf-8",
    )
    return master.salt_ssh_cli(
        timeout=300, roster_file=str(roster), target_host="hetzner", client_key=str(sshd.client_key)
    )
