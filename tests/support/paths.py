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
# the generic modules' default backup directory: a file's backups go to its path mirrored below
DEFAULT_BACKUP_DIR = "/var/backups/serverfix"


def backup_mirror(path, backup_dir=DEFAULT_BACKUP_DIR):
    """Where the backups of the files in directory ``path`` go below ``backup_dir``."""
    return Path(f"{backup_dir}{Path(path).resolve()}")


def node_tool(name):
    """Path of a locally installed npm tool (``pm2``...); fails clearly when scripts/test.sh did
    not install it."""
    path = NODE_BIN / name
    if not path.exists():
        pytest.fail(f"{path} missing: run ./scripts/test.sh (it installs tests/node locally)")
    return str(path)
