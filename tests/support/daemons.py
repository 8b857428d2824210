"""Real Salt daemons for the integration tests (pytest-salt-factories), started and stopped the
same way everywhere: a master with the given config, a minion of it."""

import contextlib

from saltfactories.utils import random_string


@contextlib.contextmanager
def started_master(salt_factories, prefix, overrides):
    """A running salt-master named ``<prefix>-<random>`` with ``overrides`` in its config."""
    factory = salt_factories.salt_master_daemon(random_string(f"{prefix}-"), overrides=overrides)
    with factory.started():
        yield factory


@contextlib.contextmanager
def started_minion(master, prefix):
    """A running salt-minion of ``master`` named ``<prefix>-<random>``."""
    factory = master.salt_minion_daemon(random_string(f"{prefix}-"))
    with factory.started():
        yield factory
