"""
Secrets by reference: a state argument given as ``{"pillar": "<pillar:key>"}`` (how the formula
passes its Redis password) is read from the pillar when the state runs, so the value never sits in
the compiled state data (``state.show_sls``, the rendered SLS in a trace-level log, the state
cache): only its pillar key.
"""

from collections.abc import Mapping

import salt.utils.data


def lookup(pillar, path, default=""):
    """
    The pillar value at ``path`` (``a:b:c``), or ``default``.

    Read from the state's or module's ``__pillar__``: Salt 3008's ``pillar.get`` hands modules
    masked values (``**********``).
    """
    return salt.utils.data.traverse_dict_and_list(pillar or {}, path, default)


def resolve(value, pillar):
    """``value``, unless it is a ``{"pillar": "<key>"}`` reference: then that pillar value
    (``""`` when unset)."""
    if isinstance(value, Mapping) and set(value) == {"pillar"}:
        return lookup(pillar, value["pillar"], "")
    return value


def resolve_all(value, pillar):
    """``value`` with every ``{"pillar": "<key>"}`` reference in it (nested mappings and lists)
    read."""
    value = resolve(value, pillar)
    if isinstance(value, Mapping):
        return {key: resolve_all(item, pillar) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [resolve_all(item, pillar) for item in value]
    return value
