"""
serverfix states: the formula-level preflight (and, with the diagnose/verify work, the final check).

Thin over the ``serverfix`` execution module.
"""

__virtualname__ = "serverfix"


def __virtual__():
    if "serverfix.preflight" in __salt__:  # pylint: disable=undefined-variable
        return __virtualname__
    return (False, "the serverfix execution module is not loaded: run saltutil.sync_all, "
                   "or state.apply serverfix sync_mods=all")


def preflight(name, config):
    """
    Fail, before anything changes, when the pillar or the files and tools the phases need
    are not right. Every other state of the formula requires this one.

    name
        Any id; the formula uses ``serverfix-preflight``.
    config
        The merged settings from map.jinja.

    .. code-block:: yaml

        serverfix-preflight:
          serverfix.preflight:
            - config: {{ serverfix | json }}
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    errors = __salt__["serverfix.preflight"](config)  # pylint: disable=undefined-variable
    if errors:
        ret["result"] = False
        ret["comment"] = ("Nothing was changed: fix these first (see pillar.example):\n- "
                          + "\n- ".join(errors))
    else:
        ret["comment"] = "Pillar, files and tools are fine."
    return ret
