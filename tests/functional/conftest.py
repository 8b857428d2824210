"""
Functional layer: the real Salt loader in-process (saltfactories ``Loaders``), against this machine.

``Loaders`` syncs ``_modules``/``_states``/``_utils`` from the formula file root, like a minion.
"""

import glob
import os
import shutil
import tempfile

import pytest
from saltfactories.utils import random_string
from saltfactories.utils.functional import Loaders

from tests.support.paths import FILE_ROOTS, backup_mirror
from tests.support.pm2 import Pm2Sandbox
from tests.support.swap import (
    EXT4_CANDIDATES,
    SYSCTL_KEYS,
    cleanup,
    fs_type,
    read_sysctl,
    write_sysctl,
)


@pytest.fixture(scope="module")
def pillar_root(make_pillar, request):
    # the module's path below tests/functional: modules/test_pm2 and states/test_pm2 differ
    return make_pillar(request.module.__name__.removeprefix(f"{__package__}."))


@pytest.fixture(scope="module")
def minion_opts(salt_factories, pillar_root):
    factory = salt_factories.salt_minion_daemon(
        random_string("func-"),
        overrides={
            "file_client": "local",
            "file_roots": {"base": FILE_ROOTS},
            "pillar_roots": {"base": [str(pillar_root)]},
        },
    )
    return factory.config.copy()


@pytest.fixture(scope="module")
def loaders(minion_opts):
    return Loaders(minion_opts, loaded_base_name=f"{__name__}.loaded")


@pytest.fixture(autouse=True)
def reset_loaders_state(loaders):
    try:
        yield
    finally:
        loaders.reset_state()


@pytest.fixture
def modules(loaders):
    return loaders.modules


@pytest.fixture
def states(loaders):
    return loaders.states


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, request):
    return tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])


@pytest.fixture(scope="module")
def pm2(workdir):  # pylint: disable=redefined-outer-name
    """A pm2 with its own PM2_HOME for the module's stand-in apps; killed afterwards."""
    manager = Pm2Sandbox(workdir)
    try:
        yield manager
    finally:
        manager.kill()


@pytest.fixture(scope="session")
def swap_base():
    """The ext4 directory swap tests work under, swept of what a killed earlier run left swapped on
    (the kernel allows about 30 swap areas; leftovers would make every later swapon fail EPERM)."""
    base = next((c for c in EXT4_CANDIDATES if os.path.isdir(c) and fs_type(c) == "ext4"), None)
    if base is None:
        pytest.skip(f"no ext4 directory among {EXT4_CANDIDATES} for swap tests")
    for left in glob.glob(os.path.join(base, "serverfix-swap-*")):
        cleanup(left)
    return base


@pytest.fixture
def swap_dir(swap_base):  # pylint: disable=redefined-outer-name
    """A fresh directory on ext4 (not tmpfs/overlayfs: swapon fails there); torn down fully."""
    root = tempfile.mkdtemp(prefix="serverfix-swap-", dir=swap_base)
    try:
        yield root
    finally:
        cleanup(root)
        # the fstab / sysctl file backups the modules made below the default backup dir
        shutil.rmtree(backup_mirror(root), ignore_errors=True)


@pytest.fixture
def sysctl_restore():
    """Records the vm.* values swap tuning touches and writes them back afterwards."""
    saved = {key: read_sysctl(key) for key in SYSCTL_KEYS}
    try:
        yield saved
    finally:
        for key, value in saved.items():
            write_sysctl(key, value)
