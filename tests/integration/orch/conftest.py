"""A master and three minions on this host for the orchestration tests: the real
formula/serverfix/orch over a stub ``serverfix`` (tests/data/orch, fault injection)."""

import pytest

from tests.support.orch import started_fleet, stub_file_root


@pytest.fixture(scope="package")
def orch_stub_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("orch-stub")


@pytest.fixture(scope="package")
def orch_fleet(salt_factories, tmp_path_factory, orch_stub_dir):
    root = stub_file_root(tmp_path_factory.mktemp("orch-root"))
    with started_fleet(salt_factories, root, orch_stub_dir) as fleet:
        yield fleet


@pytest.fixture
def stub(orch_stub_dir):
    """The stub's control directory, emptied before each test (no faults, nothing applied)."""
    for path in orch_stub_dir.iterdir():
        path.unlink()
    return orch_stub_dir
