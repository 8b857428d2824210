"""
Fixtures for every layer (unit, functional, integration, e2e); the helpers live in tests/support.

Real components, no mocks where the real thing runs here: the tests drive the real Salt
loader/daemons, real npm dotenv and pm2 (installed locally under tests/node by scripts/test.sh),
real redis-server, swapon and sysctl. Tests that change the machine carry
``@pytest.mark.destructive_test`` (run with ``--run-destructive``, as scripts/test.sh does).
"""

import shutil

import pytest
import yaml

from tests.support.dotenv_npm import NpmDotenv
from tests.support.paths import REPO, backup_mirror


@pytest.fixture(scope="session")
def salt_factories_default_root_dir(tmp_path_factory):
    # short: salt's AF_UNIX sockets live below it (107 characters at most)
    return tmp_path_factory.mktemp("sf")


@pytest.fixture(scope="session")
def salt_factories_config():
    return {"code_dir": str(REPO), "inject_sitecustomize": False, "start_timeout": 120}


@pytest.fixture(scope="session", autouse=True)
def default_backups_cleaned(tmp_path_factory):
    """A module called without ``backup_dir`` backs a temp file up below the real default
    /var/backups/serverfix (the temp path mirrored): that mirror of this session's temp dirs
    goes at the end."""
    mirror = backup_mirror(tmp_path_factory.getbasetemp())
    try:
        yield mirror
    finally:
        shutil.rmtree(mirror, ignore_errors=True)


@pytest.fixture(scope="session")
def make_pillar(tmp_path_factory):
    """
    ``make_pillar(name, serverfix={...})`` -> a pillar root whose top.sls gives every minion
    the ``serverfix`` pillar ``serverfix`` (omit it to leave the pillar empty: defaults only).
    Calling again with the same name rewrites it (refresh the pillar afterwards).
    """
    roots = {}

    def _make(name, serverfix=None):
        root = roots.get(name) or tmp_path_factory.mktemp(f"pillar-{name}")
        roots[name] = root
        (root / "top.sls").write_text("base:\n  '*':\n    - serverfix\n", encoding="utf-8")
        data = {} if serverfix is None else {"serverfix": serverfix}
        (root / "serverfix.sls").write_text(
            yaml.safe_dump(data, allow_unicode=True), encoding="utf-8"
        )
        return root

    return _make


@pytest.fixture(params=[True, False], ids=["test=True", "test=False"])
def testmode(request):
    """Run a test once in test mode and once for real (saltext-vault style)."""
    return request.param


@pytest.fixture(scope="session")
def npm_dotenv():
    """The real npm dotenv as a test oracle (tests/support/dotenv_npm.py)."""
    oracle = NpmDotenv()
    try:
        yield oracle
    finally:
        oracle.close()


def pytest_sessionfinish(session, exitstatus):
    # salt's deferred log handler holds pytest's captured stderr: flush it before pytest closes it
    try:
        import salt._logging  # pylint: disable=import-outside-toplevel
    except ImportError:
        return
    salt._logging.shutdown_temp_handler()
