"""
Which npm dotenv the backend reads its ``.env`` with, and whether the formula's ``.env`` rules
(npm dotenv 16.x-18.x, checked byte for byte; 15 reads the same) hold for it. Before 15, dotenv
read ``export`` lines, inline ``#`` comments and quoted or multi-line values differently.

Used by the preflight (refuses an older dotenv) and diagnose (says which one was found).
Reached as ``__utils__["serverfix_npm.<func>"]``; stdlib only.
"""

import json
import os
import re

OLDEST_MAJOR = 15  # the first npm dotenv with today's parser (export, inline comments, quotes)
CHECKED = "16.x-18.x"
VERSION_RE = re.compile(r"^\s*v?([0-9]+)(?:\.([0-9]+))?(?:\.([0-9]+))?", re.ASCII)


def find_package(env_file):
    """The ``node_modules/dotenv/package.json`` Node would load for an app in the ``.env``'s
    directory: the first one in that directory or a parent; ``None`` when there is none."""
    directory = os.path.dirname(os.path.abspath(env_file))
    while True:
        candidate = os.path.join(directory, "node_modules", "dotenv", "package.json")
        if os.path.isfile(candidate):
            return candidate
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent


def dotenv_version(env_file, pinned=""):
    """
    ``{"version", "source", "major", "error"}`` of the npm dotenv for ``env_file``: ``pinned``
    (the pillar's ``dotenv:npm_version``) when given, else the version in the package.json
    :func:`find_package` finds (``source`` its path). None found: ``version`` and ``source``
    ``None`` (a current dotenv is assumed). ``error`` says why a found file gave no version.
    """
    if pinned:
        source, version = "pillar", str(pinned)
    else:
        source = find_package(env_file)
        if source is None:
            return {"version": None, "source": None, "major": None, "error": None}
        try:
            with open(source, "rb") as handle:
                version = json.loads(handle.read().decode("utf-8", "replace")).get("version")
        except (OSError, ValueError, AttributeError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            return {"version": None, "source": source, "major": None, "error": str(reason)}
    match = VERSION_RE.match(version) if isinstance(version, str) else None
    if not match:
        error = f"no version number in it ({version!r})"
        return {"version": None, "source": source, "major": None, "error": error}
    return {
        "version": version.strip(),
        "source": source,
        "major": int(match.group(1)),
        "error": None,
    }


def version_problem(found, key):
    """The preflight's message for :func:`dotenv_version`'s ``found`` ('' when the .env rules
    hold); ``key`` is the pillar key to name (``serverfix:dotenv:npm_version``)."""
    where = "the pillar" if found["source"] == "pillar" else found["source"]
    if found["error"]:
        return (
            f"{key}: the npm dotenv version cannot be read from {where}: {found['error']}; "
            f"set {key} to the backend's dotenv version (e.g. 16.4.5)"
        )
    if found["major"] is not None and found["major"] < OLDEST_MAJOR:
        return (
            f"{key}: the backend reads its .env with npm dotenv {found['version']} (from {where}); "
            f"dotenv before {OLDEST_MAJOR} reads `export` lines, inline # comments and quoted "
            f"values differently from the {CHECKED} rules the formula writes by, so the backend "
            "could read other values than verify checks; upgrade dotenv in the backend "
            "(npm install dotenv@16), then run again"
        )
    return ""
