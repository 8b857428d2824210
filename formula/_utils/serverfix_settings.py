"""
The formula's settings: defaults.yaml merged with the ``serverfix`` pillar, the way map.jinja
merges them (a unit test renders map.jinja and compares), and the .env values Phase 2 writes.

- :func:`merge`: the one Python merge (the modules and the tests use it);
- :func:`env_values`: the managed .env keys (defaults.yaml's ``managed_env``) with their values;
- :func:`load`: what ``serverfix.diagnose``/``verify`` work on, from their ``config=`` argument or
  the minion's pillar.

Reached as ``__utils__["serverfix_settings.<func>"]``; stdlib and salt only.
"""

import salt.utils.yaml
from salt.exceptions import SaltInvocationError

PILLAR_KEY = "serverfix"
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
                key: (value.get(key, sub) if kind(value.get(key, sub)) == kind(sub) else sub)
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
    their own). Raises ``SaltInvocationError`` for a ``config`` that is not a mapping.
    """
    if isinstance(config, str):
        config = salt.utils.yaml.safe_load(config)
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
    return merge(defaults, config), errors, source
