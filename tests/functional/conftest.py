"""
Functional layer: the real Salt loader in-process (saltfactories ``Loaders``), against this machine.

``Loaders`` syncs ``_modules``/``_states``/``_utils`` from the formula file root, like a minion.
"""

import pytest
from saltfactories.utils import random_string
from saltfactories.utils.functional import Loaders

from tests.conftest import FILE_ROOTS


@pytest.fixture(scope="module")
def pillar_root(make_pillar, request):
    return make_pillar(request.module.__name__.rsplit(".", 1)[-1])


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
