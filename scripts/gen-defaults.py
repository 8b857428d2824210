#!/usr/bin/env python3
"""
Regenerate _utils/serverfix_defaults.py from formula/serverfix/defaults.yaml (the one source).

Why a generated copy: salt-ssh runs module calls (serverfix.diagnose/verify) on the target with the
custom modules but without the file server, so defaults.yaml cannot be fetched there.
tests/unit/test_quality.py fails when the two differ.
"""

import json
import pathlib
import sys

import yaml

REPO = pathlib.Path(__file__).resolve().parent.parent
SOURCE = REPO / "formula" / "serverfix" / "defaults.yaml"
TARGET = REPO / "_utils" / "serverfix_defaults.py"

HEADER = '''"""
The formula's pillar defaults, for module code that runs without the file server (salt-ssh).

GENERATED from formula/serverfix/defaults.yaml by scripts/gen-defaults.py: edit the YAML and
rerun the script (a unit test fails when they differ).
"""

import copy
import json

_DEFAULTS_JSON = r"""
'''

FOOTER = '''"""


def defaults():
    """A fresh copy of the ``serverfix`` defaults (safe to modify)."""
    return copy.deepcopy(json.loads(_DEFAULTS_JSON))
'''


def render():
    data = yaml.safe_load(SOURCE.read_text(encoding="utf-8"))["serverfix"]
    return HEADER + json.dumps(data, indent=2, ensure_ascii=False) + "\n" + FOOTER


if __name__ == "__main__":
    TARGET.write_text(render(), encoding="utf-8")
    sys.stdout.write(f"wrote {TARGET.relative_to(REPO)}\n")
