#!/usr/bin/env python3
"""
Generate the formula's derived copies of formula/serverfix/defaults.yaml (the one source):

- ``_utils/serverfix_defaults.py``: the defaults and the managed .env keys for module code that
  runs without the file server (salt-ssh runs serverfix.diagnose/verify on the target with the
  custom modules only, so defaults.yaml cannot be fetched there);
- ``pillar.example``: the ``serverfix:`` block of defaults.yaml as written, comments included
  (every key with its default and why).

``scripts/gen-defaults.py`` writes both; ``--check`` writes nothing and exits 1 when either is
stale (tests/unit/test_diagnose_unit.py runs it).
"""

import argparse
import json
import pathlib
import sys

import yaml

REPO = pathlib.Path(__file__).resolve().parent.parent
SOURCE = REPO / "formula" / "serverfix" / "defaults.yaml"
TARGET = REPO / "_utils" / "serverfix_defaults.py"
PILLAR_EXAMPLE = REPO / "pillar.example"

HEADER = '''"""
The formula's pillar defaults and managed .env keys, for module code that runs without the file
server (salt-ssh).

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
    return copy.deepcopy(json.loads(_DEFAULTS_JSON)["serverfix"])


def managed_env():
    """``{ENV_KEY: "section:key"}``: the .env keys the formula writes itself, in the
    runbook's order."""
    return dict(json.loads(_DEFAULTS_JSON)["managed_env"])
'''

EXAMPLE_HEADER = """# -*- coding: utf-8 -*-
# vim: ft=yaml
---
# Every key of the serverfix formula, with its default and why. You only need the keys you
# change. The formula checks this pillar before it changes anything: a wrong type, an unknown
# key (a typo) or a bad value stops the run with a message naming the key, the value (never
# for secrets) and the expected form.
# GENERATED from formula/serverfix/defaults.yaml by scripts/gen-defaults.py: edit that file.
"""


def _load():
    return yaml.safe_load(SOURCE.read_text(encoding="utf-8"))


def render():
    """The text of _utils/serverfix_defaults.py."""
    data = _load()
    shipped = {"serverfix": data["serverfix"], "managed_env": data["managed_env"]}
    return HEADER + json.dumps(shipped, indent=2, ensure_ascii=False) + "\n" + FOOTER


def render_pillar_example():
    """The text of pillar.example: defaults.yaml's ``serverfix:`` block, up to the next
    top-level key."""
    lines = SOURCE.read_text(encoding="utf-8").splitlines(keepends=True)
    start = lines.index("serverfix:\n")
    end = next(
        (
            i
            for i in range(start + 1, len(lines))
            if lines[i][:1] not in ("", " ", "\n") and not lines[i].startswith("#")
        ),
        len(lines),
    )
    while not lines[end - 1].strip() or lines[end - 1].startswith("#"):
        end -= 1  # the comments and blank lines introducing the next top-level key stay behind
    return EXAMPLE_HEADER + "".join(lines[start:end])


def outputs():
    """``{path: text}`` of every generated file."""
    return {TARGET: render(), PILLAR_EXAMPLE: render_pillar_example()}


def main(argv=None):
    """Write the generated files, or with ``--check`` exit 1 when one is stale."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a generated file is stale")
    args = parser.parse_args(argv)
    stale = []
    for path, text in outputs().items():
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(path)
        if not args.check:
            path.write_text(text, encoding="utf-8")
            sys.stdout.write(f"wrote {path.relative_to(REPO)}\n")
    if args.check and stale:
        names = ", ".join(str(p.relative_to(REPO)) for p in stale)
        sys.stderr.write(f"stale: {names}; run scripts/gen-defaults.py and commit\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
