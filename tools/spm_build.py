#!/usr/bin/env python3
"""
Build the serverfix SPM package: ``python3 tools/spm_build.py [--out DIR]``.

``spm build`` packs a whole directory and ``spm install`` installs only what lies under FORMULA's
``top_level_dir`` plus the ``_*`` module dirs, ``README*`` and ``pillar.example``. The repository
keeps the SLS files under ``formula/serverfix`` and carries ``tests/``, ``replica/``, ``scripts/``,
so this tool stages exactly the package's files in ``build/spm/stage/serverfix`` (generated on
every run, gitignored, never committed) and runs ``spm build`` on that:

    serverfix/FORMULA, serverfix/serverfix/*.sls|*.jinja|*.yaml   (top_level_dir: serverfix)
    serverfix/_modules, _states, _utils, _output (and any other formula/_* dir)
    serverfix/pillar.example, README.md, LICENSE, CHANGELOG.md

The package lands in ``--out`` (default ``build/spm``) as ``serverfix-<version>-<release>.spm``
and its path is printed. ``--version``/``--release`` override FORMULA's (for a test repository
with two builds). Stdlib only; ``spm`` is the one next to this Python or on PATH.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NAME = "serverfix"
TOP_FILES = ("pillar.example", "README.md", "LICENSE", "CHANGELOG.md")
skip_caches = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")


def spm_binary():
    """``spm`` of the Salt this Python runs (the venv), else the one on PATH."""
    beside = Path(sys.executable).parent / "spm"
    found = str(beside) if beside.exists() else shutil.which("spm")
    if not found:
        raise SystemExit("spm not found: install salt (it ships spm) or put spm on PATH")
    return found


def formula_text(version=None, release=None):
    """FORMULA with ``version``/``release`` replaced when given."""
    text = (REPO / "FORMULA").read_text(encoding="utf-8")
    for key, value in (("version", version), ("release", release)):
        if value is not None:
            text, count = re.subn(rf"(?m)^{key}:.*$", f"{key}: {value}", text)
            if count != 1:
                raise SystemExit(f"FORMULA: expected one '{key}:' line, found {count}")
    return text


def stage(stage_root, version=None, release=None):
    """Fill ``stage_root/serverfix`` with the package's files (symlinks followed); return it."""
    target = stage_root / NAME
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    (target / "FORMULA").write_text(formula_text(version, release), encoding="utf-8")
    shutil.copytree(REPO / "formula" / NAME, target / NAME, ignore=skip_caches)
    for module_dir in sorted((REPO / "formula").glob("_*")):
        # the module dirs may be symlinks (or have been): copy what they point at
        shutil.copytree(module_dir, target / module_dir.name, ignore=skip_caches, symlinks=False)
    for name in TOP_FILES:
        if (REPO / name).exists():
            shutil.copy2(REPO / name, target / name)
    return target


def build(out_dir=None, version=None, release=None):
    """Stage and ``spm build``; return the package's path."""
    work = REPO / "build" / "spm"
    out_dir = Path(out_dir or work).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    staged = stage(work / "stage", version, release)
    conf = work / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    # a private spm config: nothing of /etc/salt, /srv or /var/cache/salt is read or written
    (conf / "spm").write_text(
        f"spm_build_dir: {out_dir}\n"
        f"spm_cache_dir: {work / 'cache'}\n"
        f"spm_db: {work / 'cache' / 'packages.db'}\n"
        f"spm_logfile: {work / 'spm.log'}\n"
        f"spm_repos_config: {conf / 'spm.repos'}\n"
        f"formula_path: {work / 'unused' / 'salt'}\n"
        f"pillar_path: {work / 'unused' / 'pillar'}\n"
        f"reactor_path: {work / 'unused' / 'reactor'}\n",
        encoding="utf-8",
    )
    proc = subprocess.run(
        [spm_binary(), "-c", str(conf), "-y", "build", str(staged)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ},
    )
    match = re.search(r"Built package (\S+\.spm)", proc.stdout)
    if proc.returncode != 0 or not match:
        raise SystemExit(f"spm build failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return Path(match.group(1))


def main(argv=None):
    """The command line (``--help``): build the package and print its path."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--out", help="directory for the .spm file (default build/spm)")
    parser.add_argument("--version", help="override FORMULA's version (an integer: YYYYMM)")
    parser.add_argument("--release", help="override FORMULA's release (an integer)")
    args = parser.parse_args(argv)
    print(build(args.out, args.version, args.release))


if __name__ == "__main__":
    main()
