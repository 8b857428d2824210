"""
gitfs (issue 14, way 2): a real salt-master serves serverfix from a git remote, as most masters
get formulas, with the master config docs/distribution.md gives to copy:

    fileserver_backend: [gitfs]
    gitfs_provider: gitpython
    gitfs_remotes:
      - <url>:
        - root: formula
        - base: main

The remote is a local bare repository of this checkout's working tree over ``file://`` (committed
in a temp clone). gitfs does not follow symlinks to directories (salt#21413), so the module dirs
must be real directories under ``formula/``: ``saltutil.sync_all`` on a real minion then syncs
every module of every kind, and ``state.apply serverfix`` previews and applies (Phase 2 on a temp
``.env``; the host-wide phases are switched off in the pillar, see tests/support/distribution.py).
"""

import pytest

from tests.support import distribution as dist
from tests.support.daemons import started_master, started_minion

pytestmark = pytest.mark.skip_if_not_root  # the .env's owner/mode handling runs as root

pytest.importorskip("git", reason="gitfs needs GitPython in the master's Python")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("gitfs")


@pytest.fixture(scope="module")
def gitfs_settings(workdir):
    return dist.settings(workdir)


@pytest.fixture(scope="module")
def gitfs_remote(workdir):
    return "file://" + str(dist.bare_repo_of_checkout(workdir / "remote"))


@pytest.fixture(scope="module")
def gitfs_master(salt_factories, make_pillar, gitfs_settings, gitfs_remote):
    with started_master(
        salt_factories,
        "gitfs-master",
        {
            # gitfs only: no file_roots fallback can hide a file gitfs failed to serve
            "fileserver_backend": ["gitfs"],
            "gitfs_provider": "gitpython",
            "gitfs_remotes": [{gitfs_remote: [{"root": "formula"}, {"base": "main"}]}],
            "pillar_roots": {"base": [str(make_pillar("gitfs", gitfs_settings))]},
        },
    ) as master:
        yield master


@pytest.fixture(scope="module")
def gitfs_minion(gitfs_master):
    with started_minion(gitfs_master, "gitfs-minion") as minion:
        yield minion


@pytest.fixture(scope="module")
def salt_cli(gitfs_master):
    return gitfs_master.salt_cli(timeout=300)


def test_master_serves_the_formula_from_git(gitfs_master):
    run = gitfs_master.salt_run_cli(timeout=120)
    ret = run.run("fileserver.update", "backend=gitfs")
    assert ret.returncode == 0, ret
    ret = run.run("fileserver.file_list", "backend=gitfs")
    assert ret.returncode == 0, ret
    files = set(ret.data)
    assert {"serverfix/init.sls", "serverfix/map.jinja", "serverfix/defaults.yaml"} <= files, files
    for key, names in dist.expected_sync().items():
        dirname = next(d for d, k in dist.SYNC_KEYS.items() if k == key)
        wanted = {f"{dirname}/{name.split('.', 1)[1]}.py" for name in names}
        assert wanted <= files, f"gitfs does not serve {sorted(wanted - files)} (salt#21413?)"
    assert not [name for name in files if name.startswith(("tests/", "replica/", "scripts/"))]


def test_sync_all_syncs_every_module(salt_cli, gitfs_minion):
    ret = salt_cli.run("saltutil.sync_all", minion_tgt=gitfs_minion.id)
    dist.assert_synced_everything(ret)


def test_state_apply_preview_then_real(salt_cli, gitfs_minion, gitfs_settings):
    dist.assert_preview_then_apply(salt_cli, gitfs_minion.id, gitfs_settings["dotenv"]["file"])
