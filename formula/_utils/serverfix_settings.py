"""
The formula's settings: defaults.yaml merged with the ``serverfix`` pillar, the way map.jinja
merges them (a unit test renders map.jinja and compares), and the .env values Phase 2 writes.

- :func:`merge`: the one Python merge (the modules and the tests use it);
- :func:`env_values`: the managed .env keys (defaults.yaml's ``managed_env``) with their values;
- :func:`load`: what ``serverfix.diagnose``/``verify`` work on, from their ``config=`` argument or
  the minion's pillar.

Reached as ``__utils__["serverfix_settings.<func>"]``; stdlib and salt only.
"""

import re

import salt.utils.yaml
from salt.exceptions import SaltInvocationError

PILLAR_KEY = "serverfix"
# an integer setting given as a string of ASCII decimal digits (no leading zero) becomes an int,
# so the states, the kernel and the files get 10, never "010" or "٣" (the schema refuses those)
INT_STR_RE = re.compile(r"(?:0|[1-9][0-9]*)", re.ASCII)
NO_PILLAR_SOURCE = (
    "defaults only: no serverfix pillar is visible here (salt-ssh module calls get no "
    "pillar): pass config=, or run state.apply serverfix.verify, which gets it"
)


def kind(value):
    """``mapping``, ``list`` or ``scalar``: map.jinja's ``kind`` macro."""
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, (list, tuple)):
        return "list"
    return "scalar"


def _typed(value, default):
    """``value`` as an ``int`` where the default is one and ``value`` a plain decimal string."""
    is_int = isinstance(default, int) and not isinstance(default, bool)
    if is_int and isinstance(value, str) and INT_STR_RE.fullmatch(value):
        return int(value)
    return value


def merge(defaults, given):
    """
    ``defaults`` (the ``serverfix`` block of defaults.yaml) with the pillar ``given`` on top, key by
    key, two levels deep; a value of the wrong kind (a string where a mapping or a list belongs)
    keeps the default, so the SLS files still render and the preflight names the key.
    ``backups:keep`` falls back to the deprecated ``dotenv:backup_keep`` when only that is given;
    both then hold the result.
    """
    given = given if isinstance(given, dict) else {}
    merged = {}
    for section, default in defaults.items():
        value = given.get(section, default)
        if kind(value) != kind(default):
            value = default
        if isinstance(default, dict):
            value = {
                key: _typed(
                    value.get(key, sub) if kind(value.get(key, sub)) == kind(sub) else sub, sub
                )
                for key, sub in default.items()
            }
        merged[section] = value
    if "backups" in merged and "dotenv" in merged:
        given_backups = given.get("backups")
        given_dotenv = given.get("dotenv")
        alias_only = (
            not (isinstance(given_backups, dict) and "keep" in given_backups)
            and isinstance(given_dotenv, dict)
            and "backup_keep" in given_dotenv
        )
        keep = merged["dotenv"]["backup_keep"] if alias_only else merged["backups"]["keep"]
        merged["backups"]["keep"] = keep
        merged["dotenv"]["backup_keep"] = keep
    return merged


def env_values(settings, managed):
    """
    ``{KEY: value}`` as strings: the managed .env keys in the runbook's order (``managed``:
    defaults.yaml's ``managed_env``), then the pillar's ``dotenv:extra`` keys, as map.jinja's
    ``managed_env``. Private: it holds the Redis password.
    """
    values = {}
    for env_key, where in managed.items():
        section, key = where.split(":", 1)
        value = settings[section][key]
        if isinstance(value, bool):
            value = "true" if value else "false"
        values[env_key] = "" if value is None else str(value)
    values.update({key: str(value) for key, value in (settings["dotenv"]["extra"] or {}).items()})
    return values


def load(config, pillar, utils):
    """
    ``(settings, pillar problems, source)`` for diagnose and verify: ``config`` (the merged
    settings from map.jinja, a mapping or its JSON/YAML text; ``{"pillar": key}`` references in it
    are read from ``pillar``) wins over the ``serverfix`` pillar, both over the shipped defaults.
    ``source`` says which was used. ``utils`` is the caller's ``__utils__`` (utils get none of
    their own). Raises ``SaltInvocationError`` for a ``config`` that is not a mapping or not
    valid like the pillar (every problem, keys as ``config:<section>:<key>``, also in
    ``exc.info["errors"]``): a typo or a wrong type is never ignored. Problems between keys of
    a well-formed ``config`` (``serverfix_schema.cross_check``) are returned, as the pillar's.
    """
    if isinstance(config, str):
        try:
            config = salt.utils.yaml.safe_load(config)
        except salt.utils.yaml.YAMLError as exc:
            raise SaltInvocationError(
                f"config: not JSON or YAML ({str(exc).splitlines()[0]}); expected the merged "
                "serverfix settings as a mapping (map.jinja)"
            ) from exc
    if config is not None and not isinstance(config, dict):
        raise SaltInvocationError(
            "config: expected the merged serverfix settings as a mapping (map.jinja)"
        )
    defaults = utils["serverfix_defaults.defaults"]()
    errors = []
    source = "config"
    if config is None:
        given = utils["serverfix_schema.plain"]((pillar or {}).get(PILLAR_KEY))
        source = "pillar" if given is not None else NO_PILLAR_SOURCE
        errors = utils["serverfix_schema.validate"](given, utils)
        config = given if isinstance(given, dict) else {}
    else:
        config = utils["serverfix_pillar.resolve_all"](config, pillar or {})
        problems = utils["serverfix_schema.validate"](config, utils, root="config", cross=False)
        if problems:
            exc = SaltInvocationError(
                "config: not valid serverfix settings (see pillar.example):\n" + "\n".join(problems)
            )
            exc.info = {"errors": problems}
            raise exc
        # settings that are well-formed but unsafe together are reported, as for the pillar
        errors = utils["serverfix_schema.cross_check"](merge(defaults, config), root="config")
    return merge(defaults, config), errors, source
