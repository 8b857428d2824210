"""The ``serverfix:rollout`` block (read by formula/serverfix/orch/rollout.sls on the master) in
the pillar contract: valid values pass, a bad one is named with the fix, and a minion whose
pillar (or merged settings) carries the block is not refused for it."""

import pytest

from tests.support.loader import DEFAULTS, import_salt_module
from tests.support.paths import UTILS_DIR

NAMES = ("serverfix_defaults", "serverfix_size", "serverfix_schema", "serverfix_settings")
MODULES = {name: import_salt_module(UTILS_DIR / f"{name}.py", f"{name}_rollout") for name in NAMES}
UTILS = {
    f"{name}.{attr}": func
    for name, module in MODULES.items()
    for attr, func in vars(module).items()
    if callable(func) and not attr.startswith("_")
}


def errors(pillar):
    return UTILS["serverfix_schema.validate"](pillar, UTILS)


def test_the_defaults_hold_a_rollout_block_that_validates():
    assert DEFAULTS["rollout"] == {
        "target": "",
        "tgt_type": "glob",
        "canary": "",
        "batch": 1,
        "restart": False,
    }
    assert errors({"rollout": DEFAULTS["rollout"]}) == []
    # the merged settings a minion's states get (map.jinja: defaults + pillar) pass too
    assert errors(UTILS["serverfix_defaults.defaults"]()) == []


@pytest.mark.parametrize(
    "rollout",
    [
        {"target": "hetzner-*", "batch": 1, "restart": True},
        {"target": "hetzner-1,hetzner-2", "tgt_type": "list", "canary": "hetzner-2"},
        {"target": "G@role:intranet", "tgt_type": "compound", "batch": "3"},
    ],
)
def test_rollout_values_that_pass(rollout):
    assert errors({"rollout": rollout}) == []


@pytest.mark.parametrize(
    ("rollout", "message"),
    [
        ({"batch": 0}, "serverfix:rollout:batch: 0 is not valid; expected an integer from 1"),
        ({"batch": "10%"}, "serverfix:rollout:batch: '10%' is not valid"),
        ({"batch": True}, "serverfix:rollout:batch: True is not valid"),
        (
            {"restart": "yes"},
            "serverfix:rollout:restart: 'yes' is not valid; expected true or false",
        ),
        (
            {"tgt_type": "magic"},
            "serverfix:rollout:tgt_type: 'magic' is not valid; expected one of",
        ),
        ({"target": "a\nb"}, "serverfix:rollout:target: 'a\\nb' is not valid"),
        ({"canary": "bad id!"}, "serverfix:rollout:canary: 'bad id!' is not valid"),
        ({"batchsize": 2}, "serverfix:rollout:batchsize: unknown key (did you mean 'batch'?)"),
    ],
)
def test_bad_rollout_values_name_the_key_and_the_fix(rollout, message):
    found = errors({"rollout": rollout})
    assert len(found) == 1 and found[0].startswith(message), found
