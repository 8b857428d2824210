"""
What happened earlier in the current Salt run, for states that must react to it.

Why not ``watch``: over salt-ssh the states are compiled on the master, where this formula's
custom state modules are unknown, and Salt quietly turns ``watch`` on them into ``require``.
Salt gives every state function the run's results so far as ``__running__``; this reads them.
"""

from collections.abc import Mapping


def changed_earlier(running, sls=(), state=None, name=None):
    """
    True when a state earlier in this run changed something (in test mode: will change it).

    running
        The state function's ``__running__`` (``None`` outside a state run).
    sls / state / name
        Only count states of these SLS files / of this ``module.function`` / with this name.
    """
    for tag, ret in (running or {}).items():
        if not isinstance(ret, Mapping) or not ret.get("changes") or ret.get("result") is False:
            continue  # Salt hands a frozen mapping, not a dict
        module, _, ret_name, function = (tag.split("_|-") + ["", "", "", ""])[:4]
        if sls and ret.get("__sls__") not in sls:
            continue
        if state and f"{module}.{function}" != state:
            continue
        if name is not None and ret.get("name", ret_name) != name:
            continue
        return True
    return False
