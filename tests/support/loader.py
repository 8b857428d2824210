"""What the tests load from the code under test: its loose module files by path, its defaults."""

import importlib.util
import inspect
import sys

import yaml

from tests.support.paths import FORMULA_ROOT, UTILS_DIR

DEFAULTS = yaml.safe_load(
    (FORMULA_ROOT / "serverfix" / "defaults.yaml").read_text(encoding="utf-8")
)["serverfix"]


def import_salt_module(path, name):
    """Import a loose ``_modules``/``_states``/``_utils`` file by path (they are not a package)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


SETTINGS_UTIL = import_salt_module(UTILS_DIR / "serverfix_settings.py", "serverfix_settings_tests")


def merge_settings(pillar=None):
    """The merged settings for the ``serverfix`` pillar ``pillar``: the formula's own merge
    (``_utils/serverfix_settings.py``, the one map.jinja is tested against) over defaults.yaml."""
    return SETTINGS_UTIL.merge(DEFAULTS, pillar or {})


def utils_dunder(*names):
    """What a minion's ``__utils__`` holds for the ``_utils`` files ``names``: every public
    function of each, as ``"<file>.<function>"`` (for ``configure_loader_modules``)."""
    found = {}
    for name in names:
        module = import_salt_module(UTILS_DIR / f"{name}.py", f"{name}_test_utils_dunder")
        found.update(
            {
                f"{name}.{attr}": func
                for attr, func in vars(module).items()
                if inspect.isfunction(func) and not attr.startswith("_")
            }
        )
    return found
