"""
swapfile states: an active swap file of an exact size with one fstab line, or none at all.

Thin over the ``swapfile`` execution module; test mode reports exactly the plan the real run
carries out (create / resize / rebuild / activate / nothing) and touches nothing.
"""

from salt.exceptions import CommandExecutionError

__virtualname__ = "swapfile"


def __virtual__():
    if "swapfile.plan" in __salt__:  # pylint: disable=undefined-variable
        return __virtualname__
    return (False, "the swapfile execution module is not loaded: run saltutil.sync_all, "
                   "or state.apply serverfix sync_mods=all")


PREDICTIONS = {
    "create": "would create {path} ({size}), swap it on",
    "resize": "would swap {path} off, resize it ({reason}) and swap it on again",
    "rebuild": "would rewrite {path} ({reason}) and swap it on",
    "activate": "would swap {path} on",
    "none": "{path} is an active {size} swap file",
}


def present(name, size, fstab="/etc/fstab"):
    """
    ``name`` is an active swap file of exactly ``size`` (``2G``, ``512M``...), mode 0600 root,
    with exactly one line in ``fstab``. Created with ``fallocate`` (zeros where the file system
    or the kernel needs them); a different size is resized only when memory can take what is
    in swap. Refuses, creating nothing, without enough free disk space (plus a reserve).

    .. code-block:: yaml

        /swapfile:
          swapfile.present:
            - size: 2G
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    plan = __salt__["swapfile.plan"](name, size, fstab=fstab)  # pylint: disable=undefined-variable
    if plan["errors"]:
        ret["result"] = False
        ret["comment"] = "Nothing was changed: " + " ".join(plan["errors"])
        return ret
    if __opts__["test"]:  # pylint: disable=undefined-variable
        problems = __salt__["swapfile.preflight"](name, size)  # pylint: disable=undefined-variable
        if problems and plan["changes"]:
            ret["result"] = False
            ret["comment"] = "The real run would fail: " + " ".join(problems)
            return ret
        ret["changes"] = plan["changes"]
        words = PREDICTIONS[plan["action"]].format(path=name, size=size, reason=plan["reason"])
        if "mode" in plan["changes"]:
            words += "; would set mode 0600 root:root"
        if "fstab" in plan["changes"]:
            words += f"; would make {fstab} hold exactly one line for it"
        ret["comment"] = words[0].upper() + words[1:] + "."
        if plan["changes"]:
            ret["result"] = None
        return ret
    try:
        done = __salt__["swapfile.ensure"](name, size, fstab=fstab)  # pylint: disable=undefined-variable
    except CommandExecutionError as exc:
        ret["result"] = False
        ret["comment"] = str(exc)
        return ret
    ret["changes"] = done["changes"]
    ret["comment"] = done["comment"][0].upper() + done["comment"][1:] + (
        f"; {fstab} holds exactly one line for it." if "fstab" in done["changes"] else ".")
    return ret


def absent(name, fstab="/etc/fstab"):
    """
    No swap file at ``name``: swapped off (only when memory can take what is in it), its
    ``fstab`` lines removed, the file deleted. A file there that is not swap is left alone.

    .. code-block:: yaml

        /swapfile:
          swapfile.absent
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    changes = __salt__["swapfile.plan_remove"](name, fstab=fstab)  # pylint: disable=undefined-variable
    errors = changes.pop("errors", [])
    if errors:
        ret["result"] = False
        ret["comment"] = "Nothing was changed: " + " ".join(errors)
        return ret
    if not changes:
        ret["comment"] = f"{name} is not a swap file and is not in {fstab}."
        return ret
    if __opts__["test"]:  # pylint: disable=undefined-variable
        ret["result"] = None
        ret["changes"] = changes
        ret["comment"] = f"Would remove {name} ({', '.join(sorted(changes))})."
        return ret
    try:
        ret["changes"] = __salt__["swapfile.remove"](name, fstab=fstab)  # pylint: disable=undefined-variable
    except CommandExecutionError as exc:
        ret["result"] = False
        ret["comment"] = str(exc)
        return ret
    ret["comment"] = f"Removed {name} ({', '.join(sorted(ret['changes']))})."
    return ret
