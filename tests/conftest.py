"""
Shared test plumbing for every layer (unit, functional, integration, e2e).

Real components, no mocks where the real thing runs here: the tests drive the real Salt
loader/daemons, real npm dotenv and pm2 (installed locally under tests/node by scripts/test.sh),
real redis-server, swapon and sysctl. Tests that change the machine carry
``@pytest.mark.destructive_test`` (run with ``--run-destructive``, as scripts/test.sh does).
"""

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

# fixture modules shared by several test files (their fixtures are requested by name)
pytest_plugins = ["tests.diag_support", "tests.dotenv_npm", "tests.functional.swap_support"]

REPO = Path(__file__).resolve().parent.parent
FORMULA_ROOT = REPO / "formula"            # the only file root: it links _modules/_states/_utils
MODULES_DIR = REPO / "_modules"
STATES_DIR = REPO / "_states"
UTILS_DIR = REPO / "_utils"
NODE_DIR = REPO / "tests" / "node"
NODE_BIN = NODE_DIR / "node_modules" / ".bin"
DEFAULTS = yaml.safe_load((FORMULA_ROOT / "serverfix" / "defaults.yaml").read_text(encoding="utf-8"))["serverfix"]
FILE_ROOTS = [str(FORMULA_ROOT)]


def import_salt_module(path, name):
    """Import a loose ``_modules``/``_states`` file by path (they are not a package)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def node_tool(name):
    """Path of a locally installed npm tool (``pm2``...); skips clearly when scripts/test.sh did not install it."""
    path = NODE_BIN / name
    if not path.exists():
        pytest.fail(f"{path} missing: run ./scripts/test.sh (it installs tests/node locally)")
    return str(path)


SETTINGS_UTIL = import_salt_module(UTILS_DIR / "serverfix_settings.py", "serverfix_settings_tests")


def merge_settings(pillar=None):
    """The merged settings for the ``serverfix`` pillar ``pillar``: the formula's own merge
    (``_utils/serverfix_settings.py``, the one map.jinja is tested against) over defaults.yaml."""
    return SETTINGS_UTIL.merge(DEFAULTS, pillar or {})


@pytest.fixture(scope="session")
def salt_factories_default_root_dir(tmp_path_factory):
    # short: salt's AF_UNIX sockets live below it (107 characters at most)
    return tmp_path_factory.mktemp("sf")


@pytest.fixture(scope="session")
def salt_factories_config():
    return {"code_dir": str(REPO), "inject_sitecustomize": False, "start_timeout": 120}


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
        (root / "serverfix.sls").write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        return root

    return _make


@pytest.fixture(params=[True, False], ids=["test=True", "test=False"])
def testmode(request):
    """Run a test once in test mode and once for real (saltext-vault style)."""
    return request.param


def pytest_sessionfinish(session, exitstatus):
    # salt's deferred log handler holds pytest's captured stderr: flush it before pytest closes it
    try:
        import salt._logging  # pylint: disable=import-outside-toplevel
    except ImportError:
        return
    salt._logging.shutdown_temp_handler()


def which_or_skip(binary):
    path = shutil.which(binary)
    if not path:
        pytest.skip(f"{binary} not installed")
    return path


IS_ROOT = os.geteuid() == 0
