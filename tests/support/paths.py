"""Where things are: the repository's code and formula, and the test tools under tests/."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FORMULA_ROOT = REPO / "formula"  # the only file root: it links _modules/_states/_utils
FILE_ROOTS = [str(FORMULA_ROOT)]
MODULES_DIR = REPO / "_modules"
STATES_DIR = REPO / "_states"
UTILS_DIR = REPO / "_utils"
APPS = REPO / "tests" / "apps"  # the stand-in Node.js apps
NODE_DIR = REPO / "tests" / "node"  # npm dotenv and pm2, installed locally by scripts/test.sh
NODE_MODULES = NODE_DIR / "node_modules"
NODE_BIN = NODE_MODULES / ".bin"


def node_tool(name):
    """Path of a locally installed npm tool (``pm2``...); fails clearly when scripts/test.sh did
    not install it."""
    path = NODE_BIN / name
    if not path.exists():
        pytest.fail(f"{path} missing: run ./scripts/test.sh (it installs tests/node locally)")
    return str(path)
